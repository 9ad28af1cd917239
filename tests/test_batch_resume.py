"""--resume after an interrupted run writes exactly the output of an uninterrupted run."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from prefrank.batch import BatchConfig, ScoreColumns, score_file
from prefrank.config import ServerConfig
from prefrank.errors import InvalidArgumentError
from prefrank.ranking import Ranker
from prefrank.runtime import load_ranker

WORDS = "cat dog tea green water river mountain city capital france paris china beijing weather rain sun".split()
COLUMNS = ScoreColumns(query_id="qid")


@pytest.fixture(scope="module")
def server_config() -> ServerConfig:
    return ServerConfig.from_env(environ={})


@pytest.fixture(scope="module")
def ranker(server_config: ServerConfig) -> Ranker:
    return load_ranker(server_config)


def write_candidates(path: pathlib.Path, groups: int, per_group: int = 10) -> pathlib.Path:
    """Write a CSV of groups x per_group rows with deterministic text; every 7th row has empty text."""
    lines = ["qid,query,text"]
    for q in range(groups):
        query = " ".join(WORDS[(q + k) % len(WORDS)] for k in range(4))
        for c in range(per_group):
            n = q * per_group + c
            text = "" if n % 7 == 3 else " ".join(WORDS[(n * 5 + k * 3) % len(WORDS)] for k in range(9))
            lines.append(f"q{q},{query},{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class InterruptingRanker:
    """Delegates to a real Ranker and raises KeyboardInterrupt on the given rerank call."""

    def __init__(self, ranker: Ranker, interrupt_at: int) -> None:
        self._ranker = ranker
        self._calls = 0
        self._interrupt_at = interrupt_at

    def __getattr__(self, name: str):
        return getattr(self._ranker, name)

    def rerank(self, *args, **kwargs):
        self._calls += 1
        if self._calls == self._interrupt_at:
            raise KeyboardInterrupt
        return self._ranker.rerank(*args, **kwargs)


def config(source: pathlib.Path, output: pathlib.Path, **options) -> BatchConfig:
    return BatchConfig(input=source, output=output, columns=COLUMNS, chunk_rows=25, part_rows=20,
                       progress=False, **options)


def test_resume_after_interrupt_matches_uninterrupted(tmp_path, ranker, server_config):
    source = write_candidates(tmp_path / "in.csv", groups=12)
    score_file(config(source, tmp_path / "whole.jsonl"), server_config, ranker=ranker)

    output = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_file(config(source, output), server_config, ranker=InterruptingRanker(ranker, interrupt_at=7))
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "running"
    assert manifest["rows_done"] == 60  # two groups of 10 per part; the 7th group never finished
    assert not output.exists()

    summary = score_file(config(source, output, resume=True), server_config, ranker=ranker)

    assert output.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    rejects = (tmp_path / "out.jsonl.rejects.jsonl").read_bytes()
    assert rejects == (tmp_path / "whole.jsonl.rejects.jsonl").read_bytes()
    assert summary.rows_read == 120
    assert summary.rows_scored + summary.rows_rejected == 120
    assert summary.rows_rejected == 17
    assert json.loads((tmp_path / "out.jsonl.manifest.json").read_text())["timing"]["runs"] == 2


def test_resume_changed_input_raises(tmp_path, ranker, server_config):
    source = write_candidates(tmp_path / "in.csv", groups=6)
    output = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):
        score_file(config(source, output), server_config, ranker=InterruptingRanker(ranker, interrupt_at=4))
    stored = json.loads((tmp_path / "out.csv.manifest.json").read_text())["input"]["sha256"]
    write_candidates(source, groups=7)

    with pytest.raises(InvalidArgumentError) as raised:
        score_file(config(source, output, resume=True), server_config, ranker=ranker)

    assert raised.value.message.startswith(f"--resume: input sha256 changed since the interrupted run ('{stored}'")


def test_resume_without_interrupted_run_raises(tmp_path, ranker, server_config):
    source = write_candidates(tmp_path / "in.csv", groups=1)
    output = tmp_path / "out.csv"

    with pytest.raises(InvalidArgumentError) as raised:
        score_file(config(source, output, resume=True), server_config, ranker=ranker)

    assert raised.value.message == (
        f"--resume: no interrupted run for {output} ({tmp_path / 'out.csv.manifest.json'} "
        f"or {tmp_path / 'out.csv.parts'} is missing)"
    )


def test_resume_after_kill_matches_uninterrupted(tmp_path, ranker, server_config):
    source = write_candidates(tmp_path / "in.csv", groups=30)
    score_file(config(source, tmp_path / "whole.parquet"), server_config, ranker=ranker)
    output = tmp_path / "out.parquet"
    manifest_path = tmp_path / "out.parquet.manifest.json"
    command = [sys.executable, "-m", "prefrank", "--log-level", "WARNING", "score", str(source), "-o", str(output),
               "--query-id-column", "qid", "--chunk-rows", "25", "--part-rows", "20", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    # Kill the scorer with SIGKILL once two parts are on disk: no clean-up code runs.
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    parts = 0
    while time.monotonic() < deadline and process.poll() is None:
        if manifest_path.exists():
            parts = len(json.loads(manifest_path.read_text())["parts"])
            if parts >= 2:
                break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    stored = json.loads(manifest_path.read_text())
    if stored["status"] == "complete":
        pytest.skip("the scorer finished before it could be killed; the machine was faster than expected")
    assert process.returncode == -signal.SIGKILL
    assert 0 < stored["rows_done"] < 300

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=600)

    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("300 rows read: 257 scored in 30 query groups, 43 rejected;")
    # NOTE: the bi-encoder caches embeddings per text, and a cached embedding depends in its last
    # float32 bits on the batch it was computed in, so scores are compared up to float32 rounding.
    resumed, whole = pd.read_parquet(output), pd.read_parquet(tmp_path / "whole.parquet")
    assert list(resumed.columns) == list(whole.columns)
    for column in ("qid", "query", "text", "rank"):
        assert resumed[column].tolist() == whole[column].tolist(), column
    assert np.allclose(resumed["score"], whole["score"], rtol=0, atol=1e-6)
    assert np.allclose(resumed["relevance_score"], whole["relevance_score"], rtol=0, atol=1e-6)
    assert (tmp_path / "out.parquet.rejects.jsonl").read_bytes() == \
        (tmp_path / "whole.parquet.rejects.jsonl").read_bytes()
