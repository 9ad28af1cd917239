"""The prefrank command line: serve, index documents, search, rerank, score files, describe the models."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from prefrank import errors

logger = logging.getLogger("prefrank.cli")

ADDRESS_ENV = "PREFRANK_ADDRESS"
API_KEY_ENV = "PREFRANK_API_KEY"


# ServerConfig fields that batch scoring uses: the models and the per-request limits.
SCORE_CONFIG_FIELDS = ("models_dir", "retriever_model", "reward_model", "backend", "device", "torch_threads",
                       "batch_size", "max_candidates", "max_text_chars")


def _add_config_flags(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """Add one --flag per ServerConfig field (or per field in names); help names the PREFRANK_* variable."""
    from prefrank.config import ENV_PREFIX, ServerConfig, field_type

    for f in dataclasses.fields(ServerConfig):
        if names is not None and f.name not in names:
            continue
        kind = field_type(f)
        env = ENV_PREFIX + f.name.upper()
        shown = "(empty)" if f.default == "" else f.default
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, default=None,
            type=str if kind is bool else kind, metavar=kind.__name__.upper(),
            help=f"{f.metadata['help']} [env {env}, default {shown}]",
        )


def _client(args: argparse.Namespace) -> Any:
    from prefrank.client import PrefrankClient

    return PrefrankClient(args.address, api_key=os.environ.get(API_KEY_ENV, ""), timeout=args.timeout)


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=os.environ.get(ADDRESS_ENV, "127.0.0.1:50051"),
                        help=f"server host:port [env {ADDRESS_ENV}, default 127.0.0.1:50051]")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline per call in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


# --- commands ---

def cmd_serve(args: argparse.Namespace) -> int:
    from prefrank.config import ServerConfig, parse_value
    from prefrank.server.app import serve

    overrides = {}
    for f in dataclasses.fields(ServerConfig):
        raw = getattr(args, f.name)
        if raw is not None:
            overrides[f.name] = parse_value(f, str(raw), source="--" + f.name.replace("_", "-"))
    return serve(ServerConfig.from_env(**overrides))


def cmd_score(args: argparse.Namespace) -> int:
    from prefrank.batch import BatchConfig, ScoreColumns, score_file
    from prefrank.config import ServerConfig, parse_value

    overrides = {}
    for f in dataclasses.fields(ServerConfig):
        raw = getattr(args, f.name, None)
        if f.name in SCORE_CONFIG_FIELDS and raw is not None:
            overrides[f.name] = parse_value(f, str(raw), source="--" + f.name.replace("_", "-"))
    if "max_candidates" in overrides:
        # Search is never called here; keep its default depth valid under a smaller limit.
        overrides["search_top_k"] = min(ServerConfig.search_top_k, overrides["max_candidates"])
    columns = ScoreColumns(query=args.query_column, text=args.text_column,
                           query_id=args.query_id_column or None, candidate_id=args.candidate_id_column or None)
    config = BatchConfig(
        input=pathlib.Path(args.input), output=pathlib.Path(args.output),
        rejects=pathlib.Path(args.rejects) if args.rejects else None, columns=columns,
        chunk_rows=args.chunk_rows, part_rows=args.part_rows, resume=args.resume, overwrite=args.overwrite,
        engine=args.engine, ray_actors=args.ray_actors,
        work_dir=pathlib.Path(args.work_dir) if args.work_dir else None, progress=not args.no_progress,
    )
    summary = score_file(config, ServerConfig.from_env(**overrides))
    print(f"{summary.rows_read} rows read: {summary.rows_scored} scored in {summary.groups} query groups, "
          f"{summary.rows_rejected} rejected; {summary.elapsed_seconds:.1f} s, "
          f"{summary.rows_per_second:.1f} rows/s")
    for kind, count in sorted(summary.rejected_by_kind.items()):
        print(f"  rejected ({kind}): {count}")
    print(f"output   {summary.output}")
    print(f"rejects  {summary.rejects}")
    print(f"manifest {summary.manifest}")
    return 0


def cmd_index_add(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from prefrank.tabular import DocumentColumns, ReadReport, count_rows, read_documents

    path = pathlib.Path(args.file)
    if not path.is_file():
        raise errors.InvalidArgumentError(f"{path}: file not found")
    metadata = None if args.metadata_columns is None else tuple(c for c in args.metadata_columns.split(",") if c)
    columns = DocumentColumns(id=args.id_column, text=args.text_column,
                              title=args.title_column or None, metadata=metadata)
    report = ReadReport()
    totals = {"inserted": 0, "replaced": 0, "truncated": 0}
    with _client(args) as client, tqdm(total=count_rows(path), desc=f"indexing {path.name}", unit="doc") as bar:
        pending: dict[str, dict] = {}

        def flush() -> None:
            if pending:
                result = client.upsert(list(pending.values()))
                for key in totals:
                    totals[key] += getattr(result, key)
                bar.update(len(pending))
                pending.clear()

        for batch in read_documents(path, columns, report=report):
            for doc in batch:
                # A repeated id within one request is rejected, so send the earlier one first;
                # the later row then replaces it, as upsert semantics promise.
                if doc["id"] in pending or len(pending) >= args.batch_size:
                    flush()
                pending[doc["id"]] = doc
        flush()

    skipped = sum(len(lines) for lines in report.skipped.values())
    print(f"{report.rows} rows read: {totals['inserted']} inserted, {totals['replaced']} replaced, "
          f"{skipped} skipped, {totals['truncated']} truncated to the retriever's max length")
    for reason, lines in report.skipped.items():
        shown = ", ".join(map(str, lines[:20])) + (" ..." if len(lines) > 20 else "")
        print(f"  skipped ({reason}): {len(lines)} rows, lines {shown}", file=sys.stderr)
    return 0


def cmd_index_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(f"{client.delete(args.ids)} deleted")
    return 0


def cmd_index_stats(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    with _client(args) as client:
        stats = json_format.MessageToDict(client.stats(), always_print_fields_with_no_presence=True)
    print(json.dumps(stats, indent=2))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    filters = dict(_parse_filter(item) for item in args.filter)
    with _client(args) as client:
        hits = client.search(args.query, top_k=args.top_k, top_n=args.top_n, filter=filters,
                             return_documents=True, return_components=args.explain)
    if args.json:
        print(json.dumps([dataclasses.asdict(h) for h in hits], ensure_ascii=False, indent=2))
        return 0
    print(f"{'rank':>4}  {'score':>8}  {'relevance':>9}  {_explain_header(args.explain)}{'id':<16} title / text")
    for rank, hit in enumerate(hits, start=1):
        snippet = (hit.title or hit.text).replace("\n", " ")[:70]
        parts = _explain_cells(args.explain, hit.components)
        print(f"{rank:>4}  {hit.score:>8.4f}  {hit.relevance_score:>9.4f}  {parts}{hit.id:<16} {snippet}")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    candidates: list[Any] = list(args.candidate)
    if args.file:
        from prefrank.tabular import DocumentColumns, read_documents

        columns = DocumentColumns(id=args.id_column, text=args.text_column, title=None, metadata=())
        for batch in read_documents(pathlib.Path(args.file), columns):
            candidates.extend({"id": d["id"], "text": d["text"]} for d in batch)
    if not candidates:
        raise errors.InvalidArgumentError("candidates: give at least one --candidate TEXT or --file FILE")
    with _client(args) as client:
        response = client.rerank(args.query, candidates, top_n=args.top_n, return_documents=True,
                                 return_components=args.explain)
    if args.json:
        print(json.dumps(dataclasses.asdict(response), ensure_ascii=False, indent=2))
        return 0
    bundle = f", bundle {response.bundle_version}" if response.bundle_version else ""
    print(f"scorer {response.scorer} (model {response.model_version}{bundle})")
    print(f"{'rank':>4}  {'score':>8}  {'relevance':>9}  {_explain_header(args.explain)}{'index':>5}  {'id':<12} text")
    for rank, result in enumerate(response.results, start=1):
        cut = " [truncated]" if result.truncated else ""
        parts = _explain_cells(args.explain, result.components)
        print(f"{rank:>4}  {result.score:>8.4f}  {result.relevance_score:>9.4f}  {parts}"
              f"{result.index:>5}  {result.id:<12} {result.text.replace(chr(10), ' ')[:60]}{cut}")
    return 0


def _explain_header(explain: bool) -> str:
    return f"{'retriever':>9}  {'reward':>8}  " if explain else ""


def _explain_cells(explain: bool, components: Any) -> str:
    if not explain:
        return ""
    if components is None:
        # A server that does not return components (an older version) leaves both columns empty.
        return f"{'-':>9}  {'-':>8}  "
    reward = "-" if components.reward_score is None else f"{components.reward_score:.4f}"
    return f"{components.retriever_score:>9.4f}  {reward:>8}  "


def cmd_info(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    with _client(args) as client:
        info = json_format.MessageToDict(client.info(), always_print_fields_with_no_presence=True)
    print(json.dumps(info, indent=2))
    return 0


def _parse_filter(item: str) -> tuple[str, Any]:
    """Parse KEY=VALUE; VALUE is read as JSON when it parses (numbers, true/false), else as a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise errors.InvalidArgumentError(f"--filter {item!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


# --- parser ---

def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefrank", description="Preference-trained reranking service.")
    parser.add_argument("--log-level", default=os.environ.get("PREFRANK_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level [env PREFRANK_LOG_LEVEL]")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server")
    _add_config_flags(serve)
    serve.set_defaults(func=cmd_serve)

    index = commands.add_parser("index", help="manage the server's document index")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    add = index_commands.add_parser("add", help="upsert documents from a JSONL, CSV, TSV or Parquet file")
    add.add_argument("file", help="document file (.jsonl, .csv, .tsv, .parquet; .gz allowed except Parquet)")
    add.add_argument("--id-column", default="id", help="column with the document id (default: id)")
    add.add_argument("--text-column", default="text", help="column with the document text (default: text)")
    add.add_argument("--title-column", default="title", help="column with the title; '' for none (default: title)")
    add.add_argument("--metadata-columns", default=None,
                     help="comma-separated metadata columns (default: every other column; '' for none)")
    add.add_argument("--batch-size", type=int, default=64, help="documents per Upsert call (default: 64)")
    _add_client_flags(add)
    add.set_defaults(func=cmd_index_add)
    delete = index_commands.add_parser("delete", help="delete documents by id (all or nothing)")
    delete.add_argument("ids", nargs="+", help="document ids")
    _add_client_flags(delete)
    delete.set_defaults(func=cmd_index_delete)
    stats = index_commands.add_parser("stats", help="print index statistics")
    _add_client_flags(stats)
    stats.set_defaults(func=cmd_index_stats)

    search = commands.add_parser("search", help="search the index and rerank the hits")
    search.add_argument("query")
    search.add_argument("--top-k", type=int, default=0,
                        help="documents retrieved before reranking (0 = server default)")
    search.add_argument("--top-n", type=int, default=0, help="results shown (0 = server default)")
    search.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="metadata equality filter; repeat for several (VALUE as JSON when it parses)")
    search.add_argument("--explain", action="store_true",
                        help="show each result's retriever and reward scores (return_components)")
    _add_client_flags(search)
    search.set_defaults(func=cmd_search)

    rerank = commands.add_parser("rerank", help="rerank candidate texts for a query")
    rerank.add_argument("query")
    rerank.add_argument("--candidate", action="append", default=[], metavar="TEXT", help="a candidate; repeat")
    rerank.add_argument("--file", help="candidates from a JSONL/CSV/TSV/Parquet file")
    rerank.add_argument("--id-column", default="id", help="id column of --file (default: id)")
    rerank.add_argument("--text-column", default="text", help="text column of --file (default: text)")
    rerank.add_argument("--top-n", type=int, default=0, help="results shown (0 = all)")
    rerank.add_argument("--explain", action="store_true",
                        help="show each result's retriever and reward scores (return_components)")
    _add_client_flags(rerank)
    rerank.set_defaults(func=cmd_rerank)

    score = commands.add_parser("score", help="score a candidate file offline (local or Ray)")
    score.add_argument("input", help="candidate file (.csv, .tsv, .jsonl, .jsonl.gz, .parquet)")
    score.add_argument("-o", "--output", required=True,
                       help="scored file; its suffix picks the format (.csv, .tsv, .jsonl[.gz], .parquet)")
    score.add_argument("--query-column", default="query", help="column with the query text (default: query)")
    score.add_argument("--text-column", default="text", help="column with the candidate text (default: text)")
    score.add_argument("--query-id-column", default="",
                       help="column with the query id; rows of one query must be adjacent "
                            "(default: none, adjacent rows with equal query text form a query)")
    score.add_argument("--candidate-id-column", default="",
                       help="column with the candidate id, unique within a query (default: none)")
    score.add_argument("--rejects", default="", help="rejected rows as JSONL (default: OUTPUT.rejects.jsonl)")
    score.add_argument("--chunk-rows", type=int, default=10_000, help="rows read at a time (default: 10000)")
    score.add_argument("--part-rows", type=int, default=10_000,
                       help="scored rows per checkpoint part (default: 10000)")
    score.add_argument("--resume", action="store_true", help="continue an interrupted run (local engine)")
    score.add_argument("--overwrite", action="store_true", help="replace an existing output or unfinished run")
    score.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="'local' scores in this process; 'ray' uses Ray Data (needs prefrank[ray]; "
                            "RAY_ADDRESS selects a cluster, else a local Ray starts)")
    score.add_argument("--ray-actors", type=int, default=2, help="Ray scoring actors, one model each (default: 2)")
    score.add_argument("--work-dir", default="",
                       help="Ray engine: directory for staged shards, shared by all Ray nodes "
                            "(default: a temporary directory beside the output)")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_config_flags(score, SCORE_CONFIG_FIELDS)
    score.set_defaults(func=cmd_score)

    info = commands.add_parser("info", help="print the loaded models and limits")
    _add_client_flags(info)
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # faiss logs each CPU-specific build it probes and cannot load; harmless noise at start-up.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except errors.PrefrankError as err:
        print(f"prefrank: error: {err.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
