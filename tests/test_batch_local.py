"""The local batch engine: formats, grouping across chunks, rejects, manifest and the CLI."""

from __future__ import annotations

import gzip
import json
import pathlib

import pandas as pd
import pytest

from prefrank.batch import BatchConfig, ScoreColumns, score_file
from prefrank.cli import main
from prefrank.config import ServerConfig
from prefrank.errors import InvalidArgumentError
from prefrank.ranking import Candidate, Ranker
from prefrank.runtime import load_ranker

ROWS = [
    # query_id, query, candidate_id, text, note
    ("q1", "what is a cat", "c1", "A cat is a small furry animal that people keep as a pet.", "x"),
    ("q1", "what is a cat", "c2", "Bananas are yellow fruit.", "y"),
    ("q1", "what is a cat", "c3", "Cats purr and chase mice.", "z"),
    ("q2", "北京是哪个国家的首都", "c1", "北京是中国的首都。", "中"),
    ("q2", "北京是哪个国家的首都", "c2", "Paris is the capital of France.", "fr"),
]
COLUMNS = ScoreColumns(query_id="qid", query="query", candidate_id="cid", text="text")


@pytest.fixture(scope="module")
def server_config() -> ServerConfig:
    return ServerConfig.from_env(environ={})


@pytest.fixture(scope="module")
def ranker(server_config: ServerConfig) -> Ranker:
    return load_ranker(server_config)


def frame(rows: list[tuple] = ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["qid", "query", "cid", "text", "note"])


def write_input(path: pathlib.Path, data: pd.DataFrame) -> pathlib.Path:
    name = path.name
    if name.endswith(".parquet"):
        data.to_parquet(path, index=False)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data.to_dict(orient="records"))
        if name.endswith(".gz"):
            path.write_bytes(gzip.compress(text.encode("utf-8")))
        else:
            path.write_text(text, encoding="utf-8")
    else:
        data.to_csv(path, sep="\t" if name.endswith(".tsv") else ",", index=False)
    return path


def read_output(path: pathlib.Path) -> pd.DataFrame:
    name = path.name
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return pd.read_json(path, lines=True, dtype=False, precise_float=True)
    return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", dtype={"qid": str, "cid": str})


def expected_scores(ranker: Ranker, rows: list[tuple]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Score each query group with Ranker.rerank directly: (qid, cid) -> (score, relevance, rank)."""
    expected = {}
    for qid in dict.fromkeys(r[0] for r in rows):
        group = [r for r in rows if r[0] == qid]
        outcome = ranker.rerank(group[0][1], [Candidate(id=str(i), text=r[3]) for i, r in enumerate(group)])
        for rank, result in enumerate(outcome.results, start=1):
            expected[(qid, group[result.index][2])] = (result.score, result.relevance_score, rank)
    return expected


def run(ranker: Ranker, server_config: ServerConfig, source: pathlib.Path, output: pathlib.Path, **options):
    config = BatchConfig(input=source, output=output, columns=options.pop("columns", COLUMNS),
                         progress=False, **options)
    return score_file(config, server_config, ranker=ranker)


FORMATS = [("in.csv", "out.csv"), ("in.tsv", "out.tsv"), ("in.jsonl", "out.jsonl"),
           ("in.jsonl.gz", "out.jsonl.gz"), ("in.parquet", "out.parquet"), ("in.csv", "out.parquet"),
           ("in.parquet", "out.jsonl")]


@pytest.mark.parametrize(("source_name", "output_name"), FORMATS, ids=[f"{a}-to-{b}" for a, b in FORMATS])
def test_score_file_formats_scores_and_ranks(tmp_path, ranker, server_config, source_name, output_name):
    source = write_input(tmp_path / source_name, frame())
    output = tmp_path / output_name

    summary = run(ranker, server_config, source, output)

    assert summary.rows_scored == 5
    assert summary.groups == 2
    scored = read_output(output)
    assert list(scored.columns) == ["qid", "query", "cid", "text", "note", "score", "relevance_score", "rank"]
    assert list(scored["note"]) == ["x", "y", "z", "中", "fr"]
    expected = expected_scores(ranker, ROWS)
    for row in scored.itertuples():
        score, relevance, rank = expected[(row.qid, row.cid)]
        assert row.score == score
        assert row.relevance_score == relevance
        assert row.rank == rank
    ranks = dict(zip(zip(scored["qid"], scored["cid"], strict=True), scored["rank"], strict=True))
    assert ranks[("q1", "c2")] == 3  # bananas are the worst answer to "what is a cat"
    assert ranks[("q2", "c1")] == 1  # the Chinese answer about Beijing beats the one about Paris


def test_score_file_groups_spanning_chunks_ranked_together(tmp_path, ranker, server_config):
    rows = [("q1", "what is a cat", f"c{i}", f"candidate number {i} about cats and dogs", "") for i in range(7)]
    rows += [("q2", "what is a dog", f"c{i}", f"dogs bark, note {i}", "") for i in range(3)]
    source = write_input(tmp_path / "in.csv", frame(rows))

    run(ranker, server_config, source, tmp_path / "small.csv", chunk_rows=2, part_rows=1)
    run(ranker, server_config, source, tmp_path / "whole.csv", chunk_rows=1000)

    small = (tmp_path / "small.csv").read_bytes()
    assert small == (tmp_path / "whole.csv").read_bytes()
    scored = read_output(tmp_path / "small.csv")
    assert sorted(scored.loc[scored["qid"] == "q1", "rank"]) == list(range(1, 8))
    assert sorted(scored.loc[scored["qid"] == "q2", "rank"]) == [1, 2, 3]
    expected = expected_scores(ranker, rows)
    for row in scored.itertuples():
        assert (row.score, row.relevance_score, row.rank) == expected[(row.qid, row.cid)]


def test_score_file_rejects_file_contents(tmp_path, ranker, server_config):
    source = tmp_path / "in.csv"
    source.write_text(
        "qid,query,cid,text,note\n"
        "q1,what is a cat,c1,A cat is an animal.,\n"       # line 2
        "q1,what is a cat,c2,,empty text\n"                  # line 3
        "q1,what is a cat,c1,Duplicate id.,\n"               # line 4
        "q1,what is a dog,c3,Dogs bark.,\n"                  # line 5
        "q2,   ,c1,No query.,\n"                             # line 6
        "q2,is tea green,c1,Green tea is green.,\n"          # line 7
        "q1,what is a cat,c9,Back again.,\n",                # line 8
        encoding="utf-8",
    )
    output = tmp_path / "out.csv"

    summary = run(ranker, server_config, source, output)

    assert summary.rows_read == 7
    assert summary.rows_scored == 2
    assert summary.rows_rejected == 5
    rejects = [json.loads(line) for line in (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["kind"], r["reason"]) for r in rejects] == [
        (3, "empty candidate text", "candidate text: must not be empty"),
        (4, "duplicate candidate id", "candidate id: duplicate 'c1' within the query"),
        (5, "query differs within query id", "query: differs from the text in line 2 of the same query id"),
        (6, "empty query", "query: must not be empty"),
        (8, "query not adjacent", "query id: 'q1' comes back after its group ended; rows of one query "
                                  "must be adjacent, so sort the input by the query id column"),
    ]
    assert rejects[0]["row"] == {"qid": "q1", "query": "what is a cat", "cid": "c2", "text": "", "note": "empty text"}
    assert summary.rejected_by_kind == {"empty candidate text": 1, "duplicate candidate id": 1,
                                        "query differs within query id": 1, "empty query": 1,
                                        "query not adjacent": 1}
    assert list(read_output(output)["cid"]) == ["c1", "c1"]


def test_score_file_rejects_invalid_json_lines(tmp_path, ranker, server_config):
    source = tmp_path / "in.jsonl"
    source.write_text('{"query": "tea", "text": "green tea"}\n{"query": "tea", \n\n[1, 2]\n'
                      '{"query": "tea", "text": null}\n', encoding="utf-8")

    summary = run(ranker, server_config, source, tmp_path / "out.jsonl", columns=ScoreColumns())

    assert summary.rows_scored == 1
    rejects = [json.loads(line) for line in (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["kind"]) for r in rejects] == [(2, "invalid JSON"), (4, "invalid JSON"),
                                                        (5, "missing candidate text")]
    assert rejects[0]["raw"] == '{"query": "tea", '
    assert rejects[1]["reason"] == "expected a JSON object, got list"
    assert rejects[2]["reason"] == "candidate text: missing value in column 'text'"


def test_score_file_groups_by_query_text_without_id(tmp_path, ranker, server_config):
    source = write_input(tmp_path / "in.csv", frame()[["query", "text"]])

    summary = run(ranker, server_config, source, tmp_path / "out.csv", columns=ScoreColumns())

    assert summary.groups == 2
    assert list(read_output(tmp_path / "out.csv")["rank"]) == [1, 3, 2, 1, 2]


def test_score_file_manifest_records_run(tmp_path, ranker, server_config):
    source = write_input(tmp_path / "in.csv", frame())

    run(ranker, server_config, source, tmp_path / "out.jsonl", part_rows=2)

    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["rows"] == {"read": 5, "scored": 5, "rejected": 0, "groups": 2}
    assert manifest["input"]["format"] == "csv"
    assert len(manifest["input"]["sha256"]) == 64
    assert manifest["model"]["scorer"] == "retriever-cosine"
    assert manifest["model"]["scorer_model"]["version"] == ranker.scorer.description.version
    assert [(p["rows_start"], p["rows_end"]) for p in manifest["parts"]] == [(0, 3), (3, 5)]
    assert manifest["timing"]["finished_at"] is not None
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_score_file_missing_column_raises(tmp_path, ranker, server_config):
    source = write_input(tmp_path / "in.csv", frame()[["query", "text"]])

    with pytest.raises(InvalidArgumentError) as raised:
        run(ranker, server_config, source, tmp_path / "out.csv")

    assert raised.value.message == (
        f"input {source}: missing column(s) qid, cid; the file has query, text. "
        "Map them with --query-column / --text-column / --query-id-column / --candidate-id-column"
    )


def test_score_file_existing_output_needs_overwrite(tmp_path, ranker, server_config):
    source = write_input(tmp_path / "in.csv", frame())
    output = tmp_path / "out.csv"
    output.write_text("keep me")

    with pytest.raises(InvalidArgumentError) as raised:
        run(ranker, server_config, source, output)

    assert raised.value.message == (
        f"{output} already exists; pass --resume to continue an interrupted run or --overwrite to replace it"
    )
    assert output.read_text() == "keep me"
    run(ranker, server_config, source, output, overwrite=True)
    assert len(read_output(output)) == 5


def test_score_file_large_group_split_at_max_candidates(tmp_path, ranker):
    config = ServerConfig.from_env(environ={}, max_candidates=4, search_top_k=4)
    rows = [("q1", "what is a cat", f"c{i}", f"text {i} about a cat" + " really" * i, "") for i in range(10)]
    source = write_input(tmp_path / "in.csv", frame(rows))

    run(ranker, config, source, tmp_path / "out.csv")

    scored = read_output(tmp_path / "out.csv")
    assert sorted(scored["rank"]) == list(range(1, 11))
    best = scored.sort_values("rank")["score"].tolist()
    assert best == sorted(best, reverse=True)


def test_cli_score_prints_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = write_input(tmp_path / "in.tsv", frame())
    output = tmp_path / "out.parquet"

    code = main(["score", str(source), "-o", str(output), "--query-id-column", "qid",
                 "--candidate-id-column", "cid", "--no-progress", "--max-candidates", "3"])

    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("5 rows read: 5 scored in 2 query groups, 0 rejected;")
    assert f"output   {output}" in printed
    assert len(pd.read_parquet(output)) == 5
