"""The batch scorer and the Rerank RPC give identical scores for the same inputs."""

from __future__ import annotations

import pathlib

import pandas as pd
from conftest import RunningServer

from prefrank.batch import BatchConfig, ScoreColumns, score_file
from prefrank.config import ServerConfig
from prefrank.ranking import Ranker
from prefrank.runtime import load_ranker

ROWS = [
    ("s1", "今天天气很好。", "a", "The weather is nice today."),
    ("s1", "今天天气很好。", "b", "Today the weather good."),
    ("s1", "今天天气很好。", "c", "It is raining cats and dogs."),
    ("s2", "How do I brew green tea?", "a", "Steep the leaves in water at 80 degrees for two minutes."),
    ("s2", "How do I brew green tea?", "b", "Coffee beans are roasted seeds."),
    ("s2", "How do I brew green tea?", "c", "Boil water, add green tea leaves, wait, then pour."),
    ("s2", "How do I brew green tea?", "d", "Tea " * 400),
    ("s3", "capital of France", "a", "Paris"),
]


def score_and_compare(
    tmp_path: pathlib.Path, server: RunningServer, server_config: ServerConfig, ranker: Ranker | None = None
) -> None:
    source = tmp_path / "in.tsv"
    pd.DataFrame(ROWS, columns=["seg_id", "source", "system", "target"]).to_csv(source, sep="\t", index=False)
    output = tmp_path / "out.parquet"
    columns = ScoreColumns(query_id="seg_id", query="source", candidate_id="system", text="target")

    score_file(BatchConfig(input=source, output=output, columns=columns, chunk_rows=3, progress=False),
               server_config, ranker=ranker)

    scored = pd.read_parquet(output)
    assert len(scored) == len(ROWS)
    for seg_id, rows in scored.groupby("seg_id", sort=False):
        response = server.client.rerank(
            rows["source"].iloc[0], [{"id": s, "text": t} for s, t in zip(rows["system"], rows["target"], strict=True)]
        )
        by_id = {r.id: (r.score, r.relevance_score, rank) for rank, r in enumerate(response.results, start=1)}
        for row in rows.itertuples():
            assert (row.score, row.relevance_score, row.rank) == by_id[row.system], (seg_id, row.system)


def test_batch_scores_equal_rerank_rpc_cosine(tmp_path, shared_server):
    score_and_compare(tmp_path, shared_server, ServerConfig.from_env(environ={}))


def test_batch_scores_equal_rerank_rpc_cross_encoder(tmp_path, start_server, reward_model_dir):
    server = start_server(reward_model=str(reward_model_dir))
    config = ServerConfig.from_env(environ={}, reward_model=str(reward_model_dir))
    ranker = load_ranker(config)
    assert ranker.scorer.kind == "cross-encoder"

    score_and_compare(tmp_path, server, config, ranker)
