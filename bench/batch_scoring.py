"""Benchmark `prefrank score` (local engine): pairs/s against raw Ranker.rerank, and peak RSS 1x vs 10x.

Throughput: the same process scores the same pairs twice per repeat, once by calling
Ranker.rerank on each query group held in memory (the raw baseline) and once through score_file
on a CSV file (reading, grouping, checkpointed parts, merging). Memory: a fresh subprocess scores
a file and a 10x larger one with the same chunk size and reports its peak RSS.

    .venv/bin/python bench/batch_scoring.py --rows 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("the river city light tea green mountain winter market music school garden train story window "
         "morning paper stone bridge ocean").split()


def write_candidates(path: pathlib.Path, rows: int, per_group: int = 10) -> None:
    """Write a CSV of seeded random queries (6 words) and candidates (24 words), per_group per query.

    Every query and candidate text is unique (it ends in its number), so the retriever's
    per-text embedding cache never answers for a text that was not embedded in this run.
    """
    lines = ["qid,query,text"]
    for n in range(rows):
        q = n // per_group
        query = " ".join(random.Random(-q - 1).choices(WORDS, k=6)) + f" {q}"
        text = " ".join(random.Random(n).choices(WORDS, k=24)) + f" {n}"
        lines.append(f"q{q},{query},{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def batch_config(source: pathlib.Path, output: pathlib.Path, chunk_rows: int) -> object:
    from prefrank.batch import BatchConfig, ScoreColumns

    return BatchConfig(input=source, output=output, columns=ScoreColumns(query_id="qid"), chunk_rows=chunk_rows,
                       part_rows=chunk_rows, overwrite=True, progress=False)


def child(source: pathlib.Path, chunk_rows: int) -> None:
    """Score one file in this process and print rows, seconds and peak RSS as JSON."""
    from prefrank.batch import score_file
    from prefrank.config import ServerConfig
    from prefrank.runtime import load_ranker

    server_config = ServerConfig.from_env()
    ranker = load_ranker(server_config)
    loaded_rss = peak_rss_mb()
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        summary = score_file(batch_config(source, pathlib.Path(scratch) / "out.parquet", chunk_rows),
                             server_config, ranker=ranker)
        seconds = time.perf_counter() - started
    print(json.dumps({"rows": summary.rows_scored, "seconds": seconds, "peak_rss_after_load_mb": loaded_rss,
                      "peak_rss_mb": peak_rss_mb()}))


def clear_embedding_cache(ranker: object) -> None:
    """Empty the bi-encoder's per-text embedding cache, so every run embeds every text again.

    Without this, the second run of the same pairs only reads cached embeddings and measures the cache.
    """
    cache = getattr(ranker.encoder, "_cache", None)
    if cache is not None:
        cache.clear()


def throughput(source: pathlib.Path, repeats: int, chunk_rows: int) -> dict[str, float]:
    """Return the median pairs/s of raw Ranker.rerank and of score_file on the same pairs."""
    import pandas as pd

    from prefrank.batch import score_file
    from prefrank.config import ServerConfig
    from prefrank.ranking import Candidate
    from prefrank.runtime import load_ranker

    server_config = ServerConfig.from_env()
    ranker = load_ranker(server_config)
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    groups = [
        (rows["query"].iloc[0], [Candidate(id=str(i), text=t) for i, t in enumerate(rows["text"])])
        for _, rows in frame.groupby("qid", sort=False)
    ]
    pairs = len(frame)
    raw, batch = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            clear_embedding_cache(ranker)
            started = time.perf_counter()
            for query, candidates in groups:
                ranker.rerank(query, candidates)
            raw.append(pairs / (time.perf_counter() - started))

            clear_embedding_cache(ranker)
            started = time.perf_counter()
            score_file(batch_config(source, pathlib.Path(scratch) / "out.csv", chunk_rows), server_config,
                       ranker=ranker)
            batch.append(pairs / (time.perf_counter() - started))
    return {"pairs": pairs, "raw_pairs_per_s": statistics.median(raw), "file_pairs_per_s": statistics.median(batch),
            "raw_runs": raw, "file_runs": batch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows of the 1x file (default: 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="throughput repeats; the median is reported")
    parser.add_argument("--chunk-rows", type=int, default=500, help="rows read and written per chunk/part")
    parser.add_argument("--child", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.chunk_rows)
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        small, large = pathlib.Path(scratch) / "1x.csv", pathlib.Path(scratch) / "10x.csv"
        write_candidates(small, args.rows)
        write_candidates(large, args.rows * 10)

        speed = throughput(small, args.repeats, args.chunk_rows)
        print(f"pairs per run: {speed['pairs']}, repeats: {args.repeats}")
        print(f"raw Ranker.rerank:  {speed['raw_pairs_per_s']:8.1f} pairs/s (runs: "
              f"{', '.join(f'{v:.1f}' for v in speed['raw_runs'])})")
        print(f"score_file (local): {speed['file_pairs_per_s']:8.1f} pairs/s (runs: "
              f"{', '.join(f'{v:.1f}' for v in speed['file_runs'])})")
        print(f"ratio file / raw:   {speed['file_pairs_per_s'] / speed['raw_pairs_per_s']:.3f}")

        for label, source in (("1x", small), ("10x", large)):
            command = [sys.executable, __file__, "--child", str(source), "--chunk-rows", str(args.chunk_rows)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{label:>3}: {measured['rows']:6d} rows in {measured['seconds']:7.1f} s, peak RSS "
                  f"{measured['peak_rss_mb']:.0f} MB (after model load {measured['peak_rss_after_load_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
