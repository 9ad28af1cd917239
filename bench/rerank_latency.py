"""Benchmark: gRPC Rerank of 100 candidates against in-process scoring of the same batch.

Both paths use the same loaded scorer: the in-process path calls the server's own Ranker, so the
difference is the gRPC cost (serialisation, loopback transport, thread hand-off). Runs alternate
between the two paths so that load from other processes affects both alike.

Usage: .venv/bin/python bench/rerank_latency.py [--runs 20] [--candidates 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from common import QUERY, REPO, load_candidates, machine, make_reward_model, percentile  # noqa: E402

from prefrank.client import PrefrankClient  # noqa: E402
from prefrank.config import ServerConfig  # noqa: E402
from prefrank.ranking import Candidate  # noqa: E402
from prefrank.server.app import PrefrankServer  # noqa: E402


def measure(server: PrefrankServer, candidates: list[str], runs: int) -> dict[str, object]:
    ranker = server.state.require().ranker
    domain = [Candidate(id=str(i), text=t) for i, t in enumerate(candidates)]
    grpc_ms: list[float] = []
    local_ms: list[float] = []
    with PrefrankClient(server.address, timeout=600) as client:
        client.rerank(QUERY, candidates)  # warm the channel
        for _ in range(runs):
            started = time.perf_counter()
            local = ranker.rerank(QUERY, domain)
            local_ms.append((time.perf_counter() - started) * 1e3)
            started = time.perf_counter()
            remote = client.rerank(QUERY, candidates)
            grpc_ms.append((time.perf_counter() - started) * 1e3)
    if [r.index for r in remote.results] != [r.index for r in local.results]:
        raise SystemExit("gRPC and in-process orders differ; the benchmark compares unequal work")
    return {
        "scorer": remote.scorer,
        "in_process_p50_ms": percentile(local_ms, 50), "in_process_p99_ms": percentile(local_ms, 99),
        "grpc_p50_ms": percentile(grpc_ms, 50), "grpc_p99_ms": percentile(grpc_ms, 99),
        "p50_ratio": statistics.median(grpc_ms) / statistics.median(local_ms),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed requests per path and scorer")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request")
    parser.add_argument("--tokens", type=int, default=128, help="approximate tokens per candidate")
    parser.add_argument("--output", type=pathlib.Path, default=REPO / "reports" / "bench-rerank-latency.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory(prefix="prefrank-bench-") as tmp:
        reward = make_reward_model(REPO / "build" / "bench-reward")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(reward))
        candidates = load_candidates(args.candidates, tokenizer, args.tokens)
        for reward_model in ("", str(reward)):
            config = ServerConfig.from_env(environ={}, port=0, index_dir=str(pathlib.Path(tmp) / "data"),
                                           reward_model=reward_model)
            server = PrefrankServer(config)
            server.start()
            if not server.wait_until_ready(timeout=300):
                raise SystemExit(server.state.require())
            try:
                rows.append(measure(server, candidates, args.runs))
            finally:
                server.stop(grace=1)

    print(f"Rerank of {args.candidates} candidates (~{args.tokens} tokens each), {args.runs} runs per path")
    print("| scorer | in-process p50 / p99 (ms) | gRPC p50 / p99 (ms) | gRPC / in-process (p50) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['scorer']} | {row['in_process_p50_ms']:.1f} / {row['in_process_p99_ms']:.1f} | "
              f"{row['grpc_p50_ms']:.1f} / {row['grpc_p99_ms']:.1f} | {row['p50_ratio']:.3f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine(), "runs": args.runs, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
