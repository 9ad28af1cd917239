"""Merge the base and distilled retrievers, choosing alpha on dev; ``make merge RECIPE=<name>``.

Every floating-point parameter becomes theta = (1 - alpha) * theta_base + alpha * theta_distilled
(``torch.lerp``, which returns the base at alpha = 0 and the distilled weights at alpha = 1
exactly). For each alpha in ``fuse.alphas`` the merged retriever ranks the dev split: the
corpus for search recipes, each query's graded list otherwise. The alpha with the best
``fuse.merge_metric`` wins. A tie goes to the better NDCG@10 (or, when that is the merge metric
or missing, pairwise accuracy), then to the smaller alpha, the one closer to the base model.
The chosen model is saved and loaded back through prefrank's BiEncoder (for search, into a
fresh FAISS index as the service builds it), and dev is ranked again. The step fails when the
saved model does not reproduce the sweep's number. Output: ``<fuse.work_dir>/<recipe>/merged/``
and ``merge.json``.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from training.evaluate_reward import cosine_text_scorer, pairwise_accuracy, score_pairs
from training.fusion_loop import (
    DISTILLED_DIR,
    MERGED_DIR,
    RankingTask,
    check_inputs_current,
    configure_logging,
    load_corpus,
    load_step_inputs,
    ranking_metrics,
    ranking_task,
    read_step,
    retrieve,
    step_parser,
    work_dir,
    write_step,
)
from training.prepare import PreparedData
from training.recipe import Recipe

logger = logging.getLogger(__name__)

# Metrics that break a tie in the merge metric, first available wins.
TIE_BREAK = ("ndcg@10", "accuracy")
# Largest difference between the sweep's dev metric and the saved model's, from float rounding.
RECHECK_TOLERANCE = 1e-4


def merge_state_dicts(base: Mapping[str, Any], tuned: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """Interpolate two state dicts of the same architecture.

    Floating-point tensors are ``torch.lerp(base, tuned, alpha)``; other tensors (integer
    buffers such as position ids) must be equal and are copied from base.

    Raises:
        ValueError: alpha is outside [0, 1], or the two state dicts differ in keys, shapes or
            non-float buffers.
    """
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if set(base) != set(tuned):
        difference = sorted(set(base) ^ set(tuned))
        raise ValueError(f"the models have different parameters: {difference[:5]}")
    merged = {}
    for name, value in base.items():
        other = tuned[name]
        if value.shape != other.shape:
            raise ValueError(f"parameter {name} has shape {tuple(value.shape)} vs {tuple(other.shape)}")
        if value.is_floating_point():
            merged[name] = torch.lerp(value, other.to(value.dtype), alpha)
        elif torch.equal(value, other):
            merged[name] = value.clone()
        else:
            raise ValueError(f"non-float parameter {name} differs between the models and cannot be merged")
    return merged


def merged_model(base_dir: str | pathlib.Path, tuned_dir: str | pathlib.Path, alpha: float) -> Any:
    """Load base_dir as a SentenceTransformer with weights merged towards tuned_dir by alpha."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(base_dir), device="cpu", local_files_only=True)
    tuned = SentenceTransformer(str(tuned_dir), device="cpu", local_files_only=True)
    model.load_state_dict(merge_state_dicts(model.state_dict(), tuned.state_dict(), alpha))
    model.max_seq_length = tuned.max_seq_length
    return model


class SentenceTransformerEncoder:
    """The BiEncoder ``encode`` interface over an in-memory SentenceTransformer."""

    def __init__(self, model: Any, batch_size: int = 32) -> None:
        self._model = model
        self._batch_size = batch_size

    def encode(self, texts: Sequence[str], show_progress_bar: bool = False) -> np.ndarray:
        vectors = self._model.encode(list(texts), batch_size=self._batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=show_progress_bar)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def dev_metrics(encoder: Any, task: RankingTask | None, prepared: PreparedData) -> dict[str, float]:
    """Pairwise accuracy on dev pairs and, with graded lists, ranking metrics on dev."""
    chosen, rejected = score_pairs(prepared.pairs["dev"], cosine_text_scorer(encoder))
    metrics = {"accuracy": pairwise_accuracy(chosen, rejected)}
    if task is not None:
        metrics.update(ranking_metrics(task, retrieve(encoder, task)))
    return metrics


def selection_metric(recipe: Recipe, task: RankingTask | None) -> str:
    """Return the recipe's merge metric, or the closest one this data can measure."""
    configured = recipe.fuse.merge_metric
    chosen = configured
    if task is None:
        chosen = "accuracy"
    elif configured == "recall@100" and not task.corpus_mode:
        chosen = "ndcg@10"
    if chosen != configured:
        logger.warning("Recipe %s: merge_metric %s cannot be measured on this data; choosing alpha by dev %s",
                       recipe.name, configured, chosen)
    return chosen


def choose_alpha(rows: Sequence[Mapping[str, Any]], metric: str) -> Mapping[str, Any]:
    """Return the row with the best metric; ties go to the better TIE_BREAK metric, then the smallest alpha.

    The tie-break matters when the metric saturates: Recall@100 is often 1.0 for every alpha.
    """
    second = next((name for name in TIE_BREAK if name != metric and name in rows[0]["dev"]), None)

    def key(row: Mapping[str, Any]) -> tuple[float, float, float]:
        tie_break = round(row["dev"][second], 10) if second else 0.0
        return round(row["dev"][metric], 10), tie_break, -row["alpha"]

    return max(rows, key=key)


def sweep(recipe: Recipe, prepared: PreparedData, base_dir: str, tuned_dir: pathlib.Path) -> dict[str, Any]:
    """Rank dev with each alpha's merged retriever and return the rows, the metric and the choice."""
    task = ranking_task(prepared.dev_lists, recipe, load_corpus(recipe), seed=recipe.train.seed)
    metric = selection_metric(recipe, task)
    rows = []
    for alpha in recipe.fuse.alphas:
        started = time.perf_counter()
        encoder = SentenceTransformerEncoder(merged_model(base_dir, tuned_dir, alpha))
        row = {"alpha": alpha, "dev": dev_metrics(encoder, task, prepared),
               "seconds": time.perf_counter() - started}
        logger.info("alpha %.2f: %s", alpha, ", ".join(f"{k} {v:.4f}" for k, v in row["dev"].items()))
        rows.append(row)
    if any(metric not in row["dev"] for row in rows):
        logger.warning("Dev has no query with a relevant document for %s; choosing alpha by pairwise accuracy", metric)
        metric = "accuracy"
    return {"metric": metric, "rows": rows, "chosen": choose_alpha(rows, metric), "task": task,
            "corpus_docs": len(task.documents) if task and task.corpus_mode else 0}


def main(argv: Sequence[str] | None = None) -> int:
    """Sweep alpha on dev, save the best merged retriever and re-check it through a rebuilt index."""
    from prefrank.artifacts import bundled_retriever_path
    from prefrank.errors import ModelLoadError, PrefrankError
    from prefrank.retrieval.encoder import load_bi_encoder

    args = step_parser("python -m training.merge", __doc__.split("\n")[0]).parse_args(argv)
    configure_logging()
    try:
        recipe, prepared, reward_dir = load_step_inputs(args)
        distilled = read_step(recipe, "distill", "distill")
        check_inputs_current(recipe, reward_dir, {"distill": distilled})
        tuned_dir = work_dir(recipe) / DISTILLED_DIR
        if not (tuned_dir / "config.json").is_file() and not (tuned_dir / "modules.json").is_file():
            raise ModelLoadError(f"no distilled retriever at {tuned_dir}; "
                                 f"run `make distill RECIPE={recipe.name}` first")
        base_dir = str(bundled_retriever_path())
        result = sweep(recipe, prepared, base_dir, tuned_dir)
        chosen = result["chosen"]
        metric = result["metric"]

        # Save the chosen merge, then rank dev again with the saved model (search: through a rebuilt index).
        output = work_dir(recipe) / MERGED_DIR
        if output.exists():
            shutil.rmtree(output)
        merged_model(base_dir, tuned_dir, chosen["alpha"]).save(str(output))
        recheck = dev_metrics(load_bi_encoder(output, "cpu", 32), result["task"], prepared)
        drift = abs(recheck[metric] - chosen["dev"][metric])
        if not drift <= RECHECK_TOLERANCE:
            raise ValueError(f"the saved merged retriever gives dev {metric} {recheck[metric]:.6f}, but the sweep "
                             f"measured {chosen['dev'][metric]:.6f} for alpha {chosen['alpha']}; the saved model "
                             f"does not reproduce the merge, so {output} must not be used")
    except (PrefrankError, ValueError) as err:
        print(f"error: {getattr(err, 'message', err)}", file=sys.stderr)
        return 2
    write_step(recipe, "merge", {
        "metric": metric, "alpha": chosen["alpha"], "dev": chosen["dev"], "recheck_dev": recheck,
        "sweep": result["rows"], "corpus_docs": result["corpus_docs"], "base": base_dir, "distilled": str(tuned_dir),
        "teacher": distilled.get("teacher"), "distill_created": distilled.get("created"),
    })
    print("alpha  " + "  ".join(f"{name:>10}" for name in chosen["dev"]))
    for row in result["rows"]:
        print(f"{row['alpha']:<5.2f}  " + "  ".join(f"{value:>10.4f}" for value in row["dev"].values()))
    print(f"chosen alpha {chosen['alpha']:.2f} by dev {metric} {chosen['dev'][metric]:.4f}; "
          f"after reloading the saved model: {metric} {recheck.get(metric, float('nan')):.4f}")
    print(f"model: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
