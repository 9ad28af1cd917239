"""The dynamic batcher and the inference backends of the reward model."""

from __future__ import annotations

import gzip
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from conftest import require_data

from prefrank.batching import BatcherConfig, DynamicBatcher, plan_batches
from prefrank.errors import DeadlineExceededError, ResourceExhaustedError
from prefrank.scoring import backends
from prefrank.scoring.cross_encoder import CrossEncoderScorer


def text_score(pairs):
    """Deterministic fake forward pass: the score is a function of the pair's text only."""
    return np.array([float(len(q) * 1000 + len(t)) for q, t in pairs])


@pytest.mark.parametrize(
    ("lengths", "budget", "max_pairs", "expected"),
    [
        ([5, 1, 9, 3], 100, 10, [[2, 0, 3, 1]]),
        ([5, 1, 9, 3, 20], 20, 3, [[4], [2, 0], [3, 1]]),
        ([4, 4, 4, 4, 4], 100, 2, [[0, 1], [2, 3], [4]]),
        ([50], 10, 4, [[0]]),
    ],
    ids=["one-batch", "token-budget", "pair-limit", "oversized-item-alone"],
)
def test_plan_batches_respects_limits(lengths, budget, max_pairs, expected):
    assert plan_batches(lengths, budget, max_pairs) == expected


def test_batcher_routes_results_to_each_request():
    batcher = DynamicBatcher(text_score, BatcherConfig(max_batch_tokens=64, max_batch_pairs=8, max_wait_ms=5))
    requests = {k: [(f"query-{k}", "x" * (i % 17)) for i in range(k)] for k in range(1, 41)}

    def run(k):
        return k, batcher.submit(requests[k], [len(t) + 3 for _, t in requests[k]])

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = dict(pool.map(run, requests))
    batcher.close()

    for k, pairs in requests.items():
        np.testing.assert_array_equal(results[k], text_score(pairs), err_msg=f"request {k}")


def test_batcher_shares_batches_between_requests():
    sizes: list[int] = []

    def forward(pairs):
        sizes.append(len(pairs))
        time.sleep(0.05)
        return text_score(pairs)

    batcher = DynamicBatcher(forward, BatcherConfig(max_batch_tokens=10_000, max_batch_pairs=64, max_wait_ms=20))
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: batcher.submit([("q", f"doc {k}")], [4]), range(8)))
    batcher.close()

    assert sum(sizes) == 8
    assert max(sizes) > 1


def blocked_batcher(config: BatcherConfig) -> tuple[DynamicBatcher, threading.Event]:
    release = threading.Event()

    def forward(pairs):
        release.wait(10)
        return text_score(pairs)

    return DynamicBatcher(forward, config), release


def test_batcher_full_queue_rejects():
    batcher, release = blocked_batcher(BatcherConfig(max_queued_pairs=10, max_wait_ms=0))
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(batcher.submit, [("q", "d")] * 8, [2] * 8)
        time.sleep(0.2)
        with pytest.raises(ResourceExhaustedError) as caught:
            batcher.submit([("q", "d")] * 3, [2] * 3)
        release.set()
        assert len(first.result(10)) == 8
    batcher.close()

    assert caught.value.message == (
        "scoring queue is full (8 pairs waiting, limit 10); retry with backoff or send fewer candidates"
    )


def test_batcher_deadline_expires():
    batcher, release = blocked_batcher(BatcherConfig(max_wait_ms=0))
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(batcher.submit, [("q", "slow")], [2])
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            batcher.submit([("q", "late")], [2], deadline=time.monotonic() + 0.2)
        waited = time.monotonic() - started
        release.set()
        first.result(10)
    batcher.close()

    assert waited < 5


def test_rerank_past_deadline_returns_deadline_exceeded(start_server, reward_model_dir):
    running = start_server(reward_model=str(reward_model_dir), backend="fp32")
    candidates = [f"candidate number {i} " * 20 for i in range(200)]

    with pytest.raises(Exception) as caught:
        running.client.rerank("query", candidates, timeout=0.01)

    assert caught.value.__cause__.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# --- backends ---


def enwiki_sample(count: int = 48) -> list[tuple[str, list[str]]]:
    path = require_data("bench-corpus-enwiki") / "enwiki_passages.tsv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        next(handle)
        texts = [next(handle).rstrip("\n").split("\t", 3)[3] for _ in range(count)]
    return [
        ("Which basketball players played professionally abroad?", texts[: count // 2]),
        ("history of schools in Shanghai", texts[count // 2:]),
    ]


@pytest.mark.parametrize("backend", ["bf16"], ids=["bf16"])
def test_backend_passes_parity_on_real_text(reward_model_dir, backend):
    if not backends.cpu_supports_bf16():
        pytest.skip("CPU has no AVX512-BF16 or AMX-BF16 instructions")
    reference = CrossEncoderScorer(reward_model_dir, backend="fp32")
    candidate = CrossEncoderScorer(reward_model_dir, backend=backend)
    sample = enwiki_sample()

    report = backends.compare_scores(
        [reference.score(q, texts).scores for q, texts in sample],
        [candidate.score(q, texts).scores for q, texts in sample],
    )
    reference.close()
    candidate.close()

    assert candidate.backend == backend
    assert report.passed, str(report)


def test_int8_backend_falls_back_when_parity_fails(reward_model_dir, caplog):
    caplog.set_level(logging.WARNING, logger="prefrank.scoring.cross_encoder")
    scorer = CrossEncoderScorer(reward_model_dir, backend="int8")
    scorer.close()

    # Dynamic int8 quantisation of this MiniLM-shaped model does not reach Spearman 0.995.
    assert scorer.parity is not None
    assert not scorer.parity.passed
    assert scorer.backend == "fp32"
    assert "Backend int8 failed the parity check against fp32" in caplog.text


def test_bf16_falls_back_without_cpu_support(reward_model_dir, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="prefrank.scoring.cross_encoder")
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"sse2", "avx2"}))

    scorer = CrossEncoderScorer(reward_model_dir, backend="auto")
    scorer.close()

    assert scorer.backend == "fp32"
    assert "CPU has no AVX512-BF16 or AMX-BF16 instructions; the reward model runs in fp32" in caplog.text


def test_getinfo_reports_backend(start_server, reward_model_dir):
    running = start_server(reward_model=str(reward_model_dir), backend="fp32")

    info = running.client.info()

    assert info.reward.backend == "fp32"
    assert info.reward.parity == ""
