"""Evaluate a reward model on the test split beside baselines; ``make eval-reward RECIPE=<name>``.

Metrics per method: pairwise accuracy (ties in score count one half), accuracy per margin
bucket, and for graded sources the mean per-group Kendall tau-b against the human scores.
Baselines: the untrained bi-encoder cosine, a length heuristic (longer candidate preferred) and
random scores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from training.recipe import EvalConfig

logger = logging.getLogger(__name__)

# Scores each (query, text) row of a frame with columns query, text; returns one float per row.
TextScorer = Callable[[pd.DataFrame], np.ndarray]


def reward_scorer(model: Any, batch_size: int = 64) -> TextScorer:
    """Score with a CrossEncoder's raw logit, as the service does."""
    import torch

    identity = torch.nn.Identity()

    def score(rows: pd.DataFrame) -> np.ndarray:
        pairs = list(zip(rows["query"], rows["text"], strict=True))
        if not pairs:
            return np.zeros(0)
        logits = model.predict(pairs, batch_size=batch_size, activation_fn=identity, convert_to_numpy=True,
                               show_progress_bar=len(pairs) > 2000)
        return np.asarray(logits, dtype=np.float64).reshape(-1)

    return score


def cosine_scorer(model_dir: str, batch_size: int = 64) -> TextScorer:
    """Score with the cosine of an untrained sentence-transformers bi-encoder (the retriever alone)."""
    from prefrank.retrieval.encoder import load_bi_encoder

    return cosine_text_scorer(load_bi_encoder(model_dir, "cpu", batch_size))


def cosine_text_scorer(encoder: Any) -> TextScorer:
    """Score (query, text) rows with a BiEncoder's cosine, embedding each distinct text once."""

    def score(rows: pd.DataFrame) -> np.ndarray:
        texts = list(dict.fromkeys([*rows["query"], *rows["text"]]))
        if not texts:
            return np.zeros(0)
        vectors = encoder.encode(texts, show_progress_bar=len(texts) > 2000)
        position = {text: i for i, text in enumerate(texts)}
        queries = vectors[[position[t] for t in rows["query"]]]
        candidates = vectors[[position[t] for t in rows["text"]]]
        return np.einsum("ij,ij->i", queries, candidates).astype(np.float64)

    return score


def length_scorer(rows: pd.DataFrame) -> np.ndarray:
    """Score by candidate length in characters (the longer candidate wins)."""
    return rows["text"].str.len().to_numpy(dtype=np.float64)


def random_scorer(seed: int = 0) -> TextScorer:
    """Score each (query, text) with a uniform number fixed by a hash of the pair and the seed."""

    def score(rows: pd.DataFrame) -> np.ndarray:
        digests = [hashlib.sha1(f"{seed}\x1f{q}\x1f{t}".encode()).digest()[:8]
                   for q, t in zip(rows["query"], rows["text"], strict=True)]
        return np.array([int.from_bytes(d, "big") / 2**64 for d in digests])

    return score


def cached(scorer: TextScorer) -> TextScorer:
    """Wrap a scorer so each distinct (query, text) is scored once across calls."""
    memo: dict[tuple[str, str], float] = {}

    def score(rows: pd.DataFrame) -> np.ndarray:
        keys = list(zip(rows["query"], rows["text"], strict=True))
        missing = list(dict.fromkeys(key for key in keys if key not in memo))
        if missing:
            fresh = scorer(pd.DataFrame(missing, columns=["query", "text"]))
            memo.update(zip(missing, fresh.tolist(), strict=True))
        return np.array([memo[key] for key in keys], dtype=np.float64)

    return score


def score_pairs(pairs: pd.DataFrame, scorer: TextScorer) -> tuple[np.ndarray, np.ndarray]:
    """Score chosen and rejected of every pair, each distinct (query, text) once.

    Returns:
        (chosen scores, rejected scores), each of shape (len(pairs),).
    """
    rows = pd.concat([pairs[["query", "chosen"]].set_axis(["query", "text"], axis=1),
                      pairs[["query", "rejected"]].set_axis(["query", "text"], axis=1)], ignore_index=True)
    unique = rows.drop_duplicates().reset_index(drop=True)
    scores = pd.Series(scorer(unique), index=pd.MultiIndex.from_frame(unique))
    looked_up = scores.reindex(pd.MultiIndex.from_frame(rows)).to_numpy()
    return looked_up[:len(pairs)], looked_up[len(pairs):]


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
    """Share of pairs where chosen scores higher; equal scores count one half."""
    if len(chosen) == 0:
        return float("nan")
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def bucket_edges(margins: np.ndarray, config_edges: Sequence[float]) -> list[float]:
    """Return margin bucket upper edges: the recipe's, or the tertiles of the margins."""
    if config_edges:
        return list(config_edges)
    finite = margins[np.isfinite(margins)]
    if finite.size == 0:
        return []
    return sorted(set(np.quantile(finite, [1 / 3, 2 / 3]).round(4).tolist()))


def accuracy_by_bucket(chosen: np.ndarray, rejected: np.ndarray, margins: np.ndarray, edges: Sequence[float]
                       ) -> dict[str, dict[str, float]]:
    """Pairwise accuracy per margin bucket ``(low, high]``; pairs without a margin are not bucketed."""
    buckets = {}
    low = -np.inf
    for high in [*edges, np.inf]:
        inside = (margins > low) & (margins <= high)
        label = f"({'-inf' if low == -np.inf else f'{low:g}'}, {'inf' if high == np.inf else f'{high:g}'}]"
        if inside.any():
            buckets[label] = {"accuracy": pairwise_accuracy(chosen[inside], rejected[inside]),
                              "pairs": int(inside.sum())}
        low = high
    return buckets


def mean_kendall_tau(lists: pd.DataFrame, scorer: TextScorer) -> tuple[float, int]:
    """Mean Kendall tau-b over groups between model scores and human scores.

    Groups whose human scores are all equal have no ranking to agree with, so they are skipped.
    A constant model score on a group counts as tau 0.

    Returns:
        (mean tau, number of groups used).
    """
    from scipy.stats import kendalltau

    rows = lists.rename(columns={"candidate": "text"})
    predicted = scorer(rows[["query", "text"]].reset_index(drop=True))
    taus = []
    for _, index in rows.reset_index(drop=True).groupby("group", sort=False).indices.items():
        human = rows["score"].to_numpy()[index]
        if len(index) < 2 or np.all(human == human[0]):
            continue
        tau = kendalltau(predicted[index], human).statistic
        taus.append(0.0 if np.isnan(tau) else float(tau))
    return (float(np.mean(taus)) if taus else float("nan")), len(taus)


def evaluate_methods(pairs: pd.DataFrame, test_lists: pd.DataFrame | None, scorers: dict[str, TextScorer],
                     config: EvalConfig) -> dict[str, dict[str, Any]]:
    """Evaluate every named scorer on the same pairs (and graded lists when ``config.kendall``)."""
    margins = pairs["margin"].to_numpy(dtype=np.float64)
    edges = bucket_edges(margins, config.margin_buckets)
    if test_lists is not None and config.kendall_max_groups:
        kept = pd.unique(test_lists["group"])[:config.kendall_max_groups]
        test_lists = test_lists[test_lists["group"].isin(kept)]
    results = {}
    for name, scorer in scorers.items():
        scorer = cached(scorer)
        chosen, rejected = score_pairs(pairs, scorer)
        result: dict[str, Any] = {"pairs": len(pairs), "accuracy": pairwise_accuracy(chosen, rejected),
                                  "by_margin": accuracy_by_bucket(chosen, rejected, margins, edges)}
        if config.kendall and test_lists is not None and len(test_lists):
            result["kendall_tau"], result["kendall_groups"] = mean_kendall_tau(test_lists, scorer)
        results[name] = result
        logger.info("%s: pairwise accuracy %.4f on %d pairs", name, result["accuracy"], len(pairs))
    return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Render results as a Markdown table: one row per method, one column per metric and margin bucket."""
    buckets = list(dict.fromkeys(label for result in results.values() for label in result["by_margin"]))
    has_tau = any("kendall_tau" in result for result in results.values())
    header = ["method", "pairwise acc.", *[f"acc. margin {label}" for label in buckets]]
    header += ["Kendall tau"] if has_tau else []
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, result in results.items():
        cells = [name, f"{result['accuracy']:.3f}"]
        cells += [f"{result['by_margin'][label]['accuracy']:.3f}" if label in result["by_margin"] else "-"
                  for label in buckets]
        if has_tau:
            cells.append(f"{result['kendall_tau']:.3f}" if "kendall_tau" in result else "-")
        lines.append("| " + " | ".join(cells) + " |")
    pairs = next(iter(results.values()))["pairs"] if results else 0
    counts = ", ".join(f"{label}: {result['pairs']}" for label, result in next(iter(results.values()))[
        "by_margin"].items()) if results else ""
    return "\n".join(lines) + f"\n\n{pairs} test pairs" + (f" (per margin bucket {counts})" if counts else "") + "\n"


def make_parser() -> argparse.ArgumentParser:
    from training.recipe import add_override_flags

    parser = argparse.ArgumentParser(prog="python -m training.evaluate_reward", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", required=True, help="recipe name under recipes/ or a path to a .toml file")
    parser.add_argument("--model-dir", default=None,
                        help="artifact to evaluate; default: <output_dir>/<recipe>/latest")
    add_override_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Re-prepare the recipe's data, evaluate the artifact and the baselines on the test split, update its manifest."""
    from prefrank.errors import PrefrankError
    from training.pipeline import evaluate_artifact, latest_artifact, load_and_prepare, read_manifest
    from training.recipe import load_recipe, overrides_from_args, recipe_from_dict

    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides = overrides_from_args(args)
        recipe = load_recipe(args.recipe, overrides)
        directory = pathlib.Path(args.model_dir) if args.model_dir else latest_artifact(recipe)
        # Re-prepare with the settings the artifact was trained with, so the test split holds the
        # same query groups even when training overrode the split settings.
        trained_with = read_manifest(directory).get("recipe")
        if trained_with:
            recipe = recipe_from_dict(trained_with, overrides)
        prepared = load_and_prepare(recipe)
        results = evaluate_artifact(directory, recipe, prepared)
    except PrefrankError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(json.dumps({"artifact": str(directory)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
