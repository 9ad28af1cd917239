"""Benchmark the reward model's CPU speed: backends, batch sizes, latency, concurrency, Infinity.

Every section measures its baseline in the same run and reports ratios against it:

- backends: pairs/s of prefrank's scorer per backend and batch size against sentence-transformers
  ``CrossEncoder.predict`` in fp32 on the same model and pairs, with Spearman and top-10 overlap
  against the fp32 scores;
- latency: gRPC Rerank p50/p99 for 10, 100 and 1,000 candidates with the default backend;
- concurrency: total pairs/s of 1-16 concurrent gRPC clients against one in-process batched scorer;
- infinity: Infinity (infinity-emb 0.0.78, in its own venv under build/) serving the same model
  directory against prefrank, both with 8 concurrent clients sending 100 candidates.

Usage: .venv/bin/python bench/rerank_throughput.py [--sections backends,latency,concurrency,infinity]
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
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import QUERY, REPO, load_candidates, machine, make_reward_model, percentile  # noqa: E402

from prefrank.client import PrefrankClient  # noqa: E402
from prefrank.config import ServerConfig  # noqa: E402
from prefrank.scoring.backends import compare_scores  # noqa: E402
from prefrank.server.app import PrefrankServer  # noqa: E402

INFINITY_VENV = REPO / "build" / "infinity-venv"


def timed(fn, repeats: int) -> list[float]:
    """Run fn repeats times after one warm-up call; return the durations in seconds."""
    fn()
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - started)
    return durations


def section_backends(model_dir: pathlib.Path, candidates: list[str], repeats: int) -> list[dict]:
    import torch
    from sentence_transformers import CrossEncoder

    from prefrank.scoring.cross_encoder import CrossEncoderScorer

    pairs = [(QUERY, c) for c in candidates]
    baseline_model = CrossEncoder(str(model_dir), device="cpu")
    identity = torch.nn.Identity()

    def baseline() -> np.ndarray:
        return baseline_model.predict(pairs, batch_size=32, activation_fn=identity, show_progress_bar=False)

    reference = baseline()
    base_seconds = statistics.median(timed(baseline, repeats))
    rows = [{"variant": "sentence-transformers predict fp32, batch 32 (baseline)",
             "pairs_per_s": len(pairs) / base_seconds, "ratio": 1.0, "spearman": 1.0, "top10": 1.0}]
    for backend in ("fp32", "bf16", "int8"):
        for batch in (16, 32, 64):
            from prefrank.batching import BatcherConfig

            scorer = CrossEncoderScorer(model_dir, backend=backend,
                                        batcher=BatcherConfig(max_batch_pairs=batch, max_batch_tokens=batch * 256))
            if scorer.backend != backend:
                rows.append({"variant": f"prefrank {backend}", "note": f"rejected: {scorer.parity}"})
                scorer.close()
                break
            scores = scorer.score(QUERY, candidates).scores
            seconds = statistics.median(timed(lambda s=scorer: s.score(QUERY, candidates), repeats))
            report = compare_scores([reference], [scores])
            rows.append({"variant": f"prefrank {backend}, batch {batch}", "pairs_per_s": len(pairs) / seconds,
                         "ratio": base_seconds / seconds, "spearman": report.spearman, "top10": report.top10_overlap})
            scorer.close()
    return rows


def start_prefrank(model_dir: pathlib.Path, tmp: pathlib.Path, **overrides: object) -> PrefrankServer:
    config = ServerConfig.from_env(environ={}, port=0, index_dir=str(tmp / "index"),
                                   reward_model=str(model_dir), workers=16, **overrides)
    server = PrefrankServer(config)
    server.start()
    if not server.wait_until_ready(timeout=600):
        raise SystemExit(server.state.require())
    return server


def section_latency(server: PrefrankServer, tokenizer: object, repeats: int) -> list[dict]:
    rows = []
    pool = load_candidates(1000, tokenizer)
    with PrefrankClient(server.address, timeout=600) as client:
        for count in (10, 100, 1000):
            runs = repeats if count < 1000 else max(3, repeats // 4)
            durations = timed(lambda c=count: client.rerank(QUERY, pool[:c]), runs)
            ms = [d * 1e3 for d in durations]
            rows.append({"candidates": count, "runs": runs, "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)})
    return rows


def run_clients(send, clients: int, requests_per_client: int) -> tuple[float, list[float]]:
    """Run clients threads that each call send() requests_per_client times; return (seconds, latencies)."""
    latencies: list[float] = []

    def worker(_: int) -> None:
        for _ in range(requests_per_client):
            started = time.perf_counter()
            send()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(worker, range(clients)))
    return time.perf_counter() - started, latencies


def section_concurrency(server: PrefrankServer, candidates: list[str], repeats: int) -> list[dict]:
    scorer = server.state.require().scorer
    in_process = statistics.median(timed(lambda: scorer.score(QUERY, candidates), repeats))
    rows = [{"clients": "in-process", "pairs_per_s": len(candidates) / in_process, "ratio": 1.0}]
    client = PrefrankClient(server.address, timeout=600)
    for clients in (1, 2, 4, 8, 16):
        per_client = max(2, repeats // clients)
        seconds, latencies = run_clients(lambda: client.rerank(QUERY, candidates), clients, per_client)
        throughput = clients * per_client * len(candidates) / seconds
        rows.append({"clients": clients, "pairs_per_s": throughput, "ratio": throughput * in_process / len(candidates),
                     "p50_ms": percentile([x * 1e3 for x in latencies], 50),
                     "p99_ms": percentile([x * 1e3 for x in latencies], 99)})
    client.close()
    return rows


def section_infinity(
    server: PrefrankServer, model_dir: pathlib.Path, candidates: list[str], repeats: int
) -> list[dict]:
    import socket
    import subprocess
    import urllib.request

    binary = INFINITY_VENV / "bin" / "infinity_emb"
    if not binary.exists():
        return [{"server": "infinity", "note": f"not installed; run: python3 -m venv {INFINITY_VENV} && "
                 f"{INFINITY_VENV}/bin/pip install torch==2.13.0 'infinity-emb[server,torch]==0.0.78'"}]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(binary), "v2", "--model-id", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
               "--engine", "torch", "--device", "cpu", "--no-bettertransformer",
               "--served-model-name", "reward", "--no-vector-disk-cache"]
    log = tempfile.NamedTemporaryFile("w+", suffix="-infinity.log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"})
    body = json.dumps({"model": "reward", "query": QUERY, "documents": candidates}).encode()

    def send_infinity() -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/rerank", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            json.loads(response.read())

    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                send_infinity()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    return [{"server": "infinity", "note": "did not start: " + log.read()[-500:]}]
                time.sleep(2)
        rows = []
        client = PrefrankClient(server.address, timeout=600)
        for name, send in (("infinity", send_infinity), ("prefrank", lambda: client.rerank(QUERY, candidates))):
            send()
            seconds, latencies = run_clients(send, 8, max(2, repeats // 4))
            rows.append({"server": name, "pairs_per_s": len(latencies) * len(candidates) / seconds,
                         "p50_ms": percentile([x * 1e3 for x in latencies], 50),
                         "p99_ms": percentile([x * 1e3 for x in latencies], 99)})
        client.close()
        rows[1]["ratio"] = rows[1]["pairs_per_s"] / rows[0]["pairs_per_s"]
        return rows
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="backends,latency,concurrency,infinity",
                        help="comma-separated sections to run")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median reported)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request")
    parser.add_argument("--output", type=pathlib.Path, default=REPO / "reports" / "bench-rerank-throughput.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sections = set(args.sections.split(","))

    results: dict[str, object] = {"machine": machine(), "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="prefrank-bench-") as tmp:
        tmp_path = pathlib.Path(tmp)
        model_dir = make_reward_model(REPO / "build" / "bench-reward")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        candidates = load_candidates(args.candidates, tokenizer)
        if "backends" in sections:
            results["backends"] = section_backends(model_dir, candidates, args.repeats)
        if sections & {"latency", "concurrency", "infinity"}:
            server = start_prefrank(model_dir, tmp_path)
            results["backend_served"] = server.state.require().scorer.description.backend
            try:
                if "latency" in sections:
                    results["latency"] = section_latency(server, tokenizer, args.repeats)
                if "concurrency" in sections:
                    results["concurrency"] = section_concurrency(server, candidates, args.repeats)
                if "infinity" in sections:
                    results["infinity"] = section_infinity(server, model_dir, candidates, args.repeats)
            finally:
                server.stop(grace=1)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
