"""Evaluate Search end to end on SciFact: index the corpus through the CLI, query over gRPC, score with trec_eval.

Run with ``make eval-search``. The script starts its own server on a free loopback port with a
fresh data directory, indexes ``scifact/corpus.csv`` with ``prefrank index add``, sends every claim
that has evidence through ``Reranker.Search`` and prints NDCG@10, MRR@10 and Recall@100 computed by
pytrec_eval (the trec_eval implementation). Qrels: (claim id, evidence doc id) has relevance 1,
as in BEIR's SciFact.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import tokenize
from collections.abc import Iterator, Sequence

import pytrec_eval
from tqdm.auto import tqdm

from prefrank.client import PrefrankClient

logger = logging.getLogger(__name__)

REPO = pathlib.Path(__file__).resolve().parent.parent
METRICS = {"ndcg_cut_10": "ndcg@10", "recip_rank": "mrr@10", "recall_100": "recall@100"}


def parse_abstract(raw: str) -> list[str]:
    """Split SciFact's numpy-style sentence list (``['s1'\\n 's2']``, no commas) into sentences.

    ``ast.literal_eval`` would silently concatenate adjacent string literals, so each string
    token is evaluated on its own.
    """
    tokens = tokenize.generate_tokens(io.StringIO(raw).readline)
    return [ast.literal_eval(t.string) for t in tokens if t.type == tokenize.STRING]


def write_corpus_jsonl(corpus_csv: pathlib.Path, out: pathlib.Path) -> int:
    """Convert corpus.csv to JSONL documents (id, title, text) and return the row count."""
    csv.field_size_limit(sys.maxsize)
    count = 0
    with corpus_csv.open(newline="", encoding="utf-8") as source, out.open("w", encoding="utf-8") as sink:
        for row in csv.DictReader(source):
            text = " ".join(parse_abstract(row["abstract"]))
            document = {"id": row["doc_id"], "title": row["title"], "text": text,
                        "structured": row["structured"] == "True"}
            sink.write(json.dumps(document, ensure_ascii=False) + "\n")
            count += 1
    return count


def load_claims(files: Sequence[pathlib.Path]) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Return (claim id -> claim text, qrels) for claims with at least one evidence document."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for path in files:
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if not row["evidence_doc_id"]:
                    continue
                queries[row["id"]] = row["claim"]
                qrels.setdefault(row["id"], {})[row["evidence_doc_id"]] = 1
    return queries, qrels


def evaluate(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Return mean NDCG@10, MRR@10 and Recall@100 over the queries in qrels."""
    return {name: sum(values) / len(values) for name, values in evaluate_per_query(run, qrels).items()}


def evaluate_per_query(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]
                       ) -> dict[str, list[float]]:
    """Return NDCG@10, MRR@10 and Recall@100 of each query in qrels, in qrels order (0 for a query without a run).

    trec_eval's recip_rank has no cut-off, so MRR@10 is computed on each run cut to its 10 best.
    """
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100"}).evaluate(run)
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    results = {}
    for measure, per_query in (("ndcg_cut_10", full), ("recall_100", full), ("recip_rank", cut)):
        results[METRICS[measure]] = [per_query.get(q, {}).get(measure, 0.0) for q in qrels]
    return results


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index_dir: pathlib.Path, port: int, extra: Sequence[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "prefrank", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--index-dir", str(index_dir), *extra]
    logger.info("Starting server: %s", " ".join(command))
    return subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def search_all(client: PrefrankClient, queries: dict[str, str], top_k: int) -> Iterator[tuple[str, dict[str, float]]]:
    for query_id, text in tqdm(queries.items(), desc="searching", unit="query"):
        hits = client.search(text, top_k=top_k, top_n=top_k)
        # trec_eval ranks by score; 1/rank keeps the service's order exactly, ties included.
        yield query_id, {hit.id: 1.0 / rank for rank, hit in enumerate(hits, start=1)}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("PREFRANK_DATA_DIR", REPO.parent / "shared" / "data")),
                        help="folder of the shared datasets [env PREFRANK_DATA_DIR]")
    parser.add_argument("--top-k", type=int, default=100, help="documents retrieved and reranked per claim")
    parser.add_argument("--output", type=pathlib.Path, default=REPO / "reports" / "eval-search.json",
                        help="where the metrics JSON is written")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `prefrank serve` flag, e.g. --server-arg=--reward-model=PATH; repeat")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scifact = args.data_dir / "scifact"
    if not scifact.is_dir():
        print(f"error: {scifact} not found; set PREFRANK_DATA_DIR to the shared data folder", file=sys.stderr)
        return 2
    queries, qrels = load_claims([scifact / "claims_train.csv", scifact / "claims_validation.csv"])

    with tempfile.TemporaryDirectory(prefix="prefrank-eval-") as tmp:
        workdir = pathlib.Path(tmp)
        corpus = workdir / "scifact-corpus.jsonl"
        documents = write_corpus_jsonl(scifact / "corpus.csv", corpus)
        port = free_port()
        address = f"127.0.0.1:{port}"
        server = start_server(workdir / "index", port, args.server_arg)
        try:
            with PrefrankClient(address, timeout=300) as client:
                client.wait_until_serving(timeout=300)
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "prefrank", "index", "add", str(corpus),
                                "--address", address], check=True)
                index_seconds = time.perf_counter() - started
                info = client.info()
                started = time.perf_counter()
                run = dict(search_all(client, queries, args.top_k))
                search_seconds = time.perf_counter() - started
        finally:
            stop_server(server)

    metrics = evaluate(run, qrels)
    result = {
        "dataset": "scifact (claims_train + claims_validation with evidence)",
        "queries": len(queries), "documents": documents, "top_k": args.top_k,
        "scorer": info.scorer, "retriever": info.retriever.name, "retriever_version": info.retriever.version,
        "reward_version": info.reward.version if info.HasField("reward") else None,
        "metrics": metrics, "index_seconds": round(index_seconds, 1),
        "search_ms_per_query": round(1e3 * search_seconds / len(queries), 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nSciFact Search over gRPC: {len(queries)} claims, {documents} documents, scorer {info.scorer}")
    print(f"{'metric':<12}{'value':>8}")
    for name, value in metrics.items():
        print(f"{name:<12}{value:>8.4f}")
    print(f"indexing {index_seconds:.1f} s, {result['search_ms_per_query']} ms per query; written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
