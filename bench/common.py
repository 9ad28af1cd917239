"""Shared benchmark inputs: real candidate texts, a reward model directory, percentiles, machine info."""

from __future__ import annotations

import gzip
import os
import pathlib
import platform
import subprocess

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = pathlib.Path(os.environ.get("PREFRANK_DATA_DIR", REPO.parent / "shared" / "data"))
QUERY = "Which American basketball players have played professionally in South American leagues?"


def load_candidates(count: int, tokenizer: object, target_tokens: int = 128) -> list[str]:
    """Join consecutive enwiki passages until each candidate has about target_tokens tokens."""
    path = DATA_DIR / "bench-corpus-enwiki" / "enwiki_passages.tsv.gz"
    candidates: list[str] = []
    current: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            current.append(line.rstrip("\n").split("\t", 3)[3])
            text = " ".join(current)
            if len(tokenizer(text)["input_ids"]) >= target_tokens:
                candidates.append(text)
                current = []
                if len(candidates) == count:
                    return candidates
    raise SystemExit(f"{path} has fewer than {count} candidates of {target_tokens} tokens")


def make_reward_model(directory: pathlib.Path) -> pathlib.Path:
    """Save a one-output CrossEncoder built from the bundled MiniLM weights with a seeded head.

    Its rankings are meaningless, but its shape (MiniLM-L6, 384 hidden) and so its speed equal a
    trained prefrank reward model's.
    """
    if (directory / "config.json").exists():
        return directory
    import torch
    from sentence_transformers import CrossEncoder

    from prefrank.artifacts import bundled_retriever_path

    torch.manual_seed(0)
    model = CrossEncoder(str(bundled_retriever_path()), num_labels=1, device="cpu", max_length=256)
    model.save(str(directory))
    return directory


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def machine() -> dict[str, object]:
    """CPU model, core count and the CPU flags that matter for bf16 and int8 inference."""
    from prefrank.scoring.backends import cpu_flags

    model = ""
    try:
        model = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        lines = model.splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "")
    except OSError:
        pass
    interesting = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "avx_vnni")))
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "flags": interesting,
            "python": platform.python_version()}
