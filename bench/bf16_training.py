"""Benchmark: reward-model training steps with and without bf16 autocast on the CPU.

One step = forward and backward of the Bradley-Terry loss over a batch of real MQM zh->en pairs
(all-MiniLM-L6-v2 cross-encoder) plus an AdamW update. fp32 and bf16 steps alternate, so load
from other processes affects both alike; the script reports the median pairs/s of each and their
ratio. Copy the printed Markdown line into BENCHMARKS.md.

Usage: .venv/bin/python bench/bf16_training.py [--runs 8] [--batch-size 16] [--max-length 256]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from training.bradley_terry import BradleyTerryLoss  # noqa: E402
from training.prepare import prepare  # noqa: E402
from training.recipe import PrepareConfig  # noqa: E402
from training.sources import load_source  # noqa: E402
from training.train_reward import cpu_supports_bf16, load_base_model  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="timed steps per mode (after one warm-up step each)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per (query, candidate) input")
    args = parser.parse_args()

    data_dir = pathlib.Path(os.environ.get("PREFRANK_DATA_DIR", REPO.parent / "shared" / "data"))
    loaded = load_source("mqm", data_dir, {"path": "wmt-mqm-ted/zhen/mqm_ted_zhen.tsv"})
    pairs = prepare(loaded, PrepareConfig(min_score_gap=1.0)).pairs["train"].head(args.batch_size)
    inputs = [pairs["query"].tolist(), pairs["chosen"].tolist(), pairs["rejected"].tolist()]

    model = load_base_model("", args.max_length, seed=0)
    loss_fn = BradleyTerryLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    step(False)
    step(True)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs):
        for bf16 in (False, True):
            seconds[bf16].append(step(bf16))
    fp32 = args.batch_size / statistics.median(seconds[False])
    bf16 = args.batch_size / statistics.median(seconds[True])
    cpu = platform.processor() or platform.machine()
    print(f"cpu bf16 instructions: {cpu_supports_bf16()}, torch threads {torch.get_num_threads()}, {cpu}")
    print(f"| bf16 autocast training step | {args.batch_size} pairs, max_length {args.max_length}, "
          f"median of {args.runs} | fp32 {fp32:.2f} pairs/s | bf16 {bf16:.2f} pairs/s | bf16/fp32 {bf16 / fp32:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
