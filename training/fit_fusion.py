"""Fit the score fusion and its calibration on dev; ``make fit-fusion RECIPE=<name>``.

Weights: f = w_r * r + w_s * s + b with r the reward logit and s the merged retriever's cosine.
The Bradley-Terry view of a dev pair gives P(chosen > rejected) = sigmoid(f(chosen) - f(rejected))
= sigmoid(w_r * delta_r + w_s * delta_s), so scikit-learn's LogisticRegression without an
intercept, on each pair's differences in both orders (label 1, then negated with label 0), fits
(w_r, w_s). b is 0: a constant cancels in every comparison, and the calibrator absorbs it.

Calibration: relevance = g(f), fit on dev graded lists (label 1 when the graded score reaches
the last of ``fuse.gain_thresholds``); recipes with pairs only use chosen as 1 and rejected as
0. Platt scaling (a logistic regression on f) and isotonic regression are each fit on one half
of the dev query groups and scored by expected calibration error on the other half, both
ways. The method with the lower mean ECE is refit on all of dev. Output:
``<fuse.work_dir>/<recipe>/fusion.json`` (prefrank's format) and ``fit-fusion.json``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from prefrank.scoring.fusion import Calibrator, FusionModel, save_fusion
from training.evaluate_reward import cached, cosine_text_scorer, pairwise_accuracy, reward_scorer, score_pairs
from training.fusion_loop import (
    FUSION_FILE,
    MERGED_DIR,
    check_inputs_current,
    configure_logging,
    expected_calibration_error,
    labelled_rows,
    load_cross_encoder,
    load_step_inputs,
    read_step,
    step_parser,
    work_dir,
    write_step,
)
from training.prepare import PreparedData
from training.recipe import Recipe

logger = logging.getLogger(__name__)

# Inverse regularisation strength: weak, so the weights follow the data, but finite so that
# separable dev data still gives finite weights.
LOGISTIC_C = 100.0
LOGISTIC_TOL = 1e-10


def fit_weights(reward_diff: np.ndarray, retriever_diff: np.ndarray) -> tuple[float, float]:
    """Fit (w_r, w_s) by logistic regression on chosen-minus-rejected differences, in both orders."""
    from sklearn.linear_model import LogisticRegression

    features = np.column_stack([reward_diff, retriever_diff]).astype(np.float64)
    inputs = np.vstack([features, -features])
    labels = np.concatenate([np.ones(len(features)), np.zeros(len(features))])
    # lbfgs starts at w = 0, where the gradient scales with the feature differences. With tiny
    # differences (a weak reward model) it is below the default tol of 1e-4, and the fit would
    # stop at zero weights after 0 iterations.
    model = LogisticRegression(C=LOGISTIC_C, fit_intercept=False, tol=LOGISTIC_TOL, max_iter=10_000)
    model.fit(inputs, labels)
    w_r, w_s = (float(w) for w in model.coef_[0])
    if w_r == 0.0 and w_s == 0.0:
        raise ValueError("the fusion fit gave zero weights for both the reward and the retriever score, so every "
                         "candidate would get the same score; check that the dev pairs are not all ties")
    return w_r, w_s


def fit_platt(fused: np.ndarray, labels: np.ndarray) -> Calibrator | None:
    """Fit Platt scaling; return None when relevance would fall as f rises (slope <= 0) or labels are one class."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(labels)) < 2:
        return None
    model = LogisticRegression(C=LOGISTIC_C, max_iter=1000).fit(fused.reshape(-1, 1), labels)
    slope, intercept = float(model.coef_[0][0]), float(model.intercept_[0])
    if slope <= 0:
        return None
    return Calibrator(method="platt", slope=slope, intercept=intercept)


def fit_isotonic(fused: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Fit isotonic regression, stored as its thresholds and flat beyond the first and last."""
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(fused, labels)
    x, y = np.asarray(model.X_thresholds_, dtype=np.float64), np.asarray(model.y_thresholds_, dtype=np.float64)
    keep = np.concatenate([[True], np.diff(x) > 0])
    x, y = x[keep], np.maximum.accumulate(np.clip(y[keep], 0.0, 1.0))
    if len(x) < 2:
        x = np.array([x[0] - 1.0, x[0]]) if len(x) else np.array([0.0, 1.0])
        y = np.full(2, y[0] if len(y) else float(np.mean(labels)))
    return Calibrator(method="isotonic", thresholds=tuple(x.tolist()), values=tuple(y.tolist()))


def choose_calibration(fused: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int
                       ) -> tuple[Calibrator, dict[str, float]]:
    """Cross-fit Platt and isotonic over two halves of the groups; refit the lower-ECE one on all.

    Returns:
        The calibrator and the held-out ECE of each method that could be fit.
    """
    distinct = np.unique(groups)
    rng = np.random.default_rng(seed)
    half = set(rng.permutation(distinct)[: len(distinct) // 2].tolist())
    first = np.array([g in half for g in groups])
    errors: dict[str, list[float]] = {"platt": [], "isotonic": []}
    for fit_mask in (first, ~first):
        held_out = ~fit_mask
        if not fit_mask.any() or not held_out.any():
            continue
        for name, fit in (("platt", fit_platt), ("isotonic", fit_isotonic)):
            calibrator = fit(fused[fit_mask], labels[fit_mask])
            if calibrator is not None:
                errors[name].append(expected_calibration_error(calibrator.apply(fused[held_out]), labels[held_out]))
    ece = {f"ece_{name}": float(np.mean(values)) for name, values in errors.items() if values}
    platt = fit_platt(fused, labels)
    use_platt = platt is not None and ece.get("ece_platt", np.inf) <= ece.get("ece_isotonic", np.inf)
    return (platt if use_platt else fit_isotonic(fused, labels)), ece


def fit_fusion(recipe: Recipe, prepared: PreparedData, reward: Any, retriever: Any) -> tuple[FusionModel, dict]:
    """Fit weights on dev pairs and the calibration on dev rows.

    Args:
        reward, retriever: TextScorers (reward logit, retriever cosine).
    """
    dev = prepared.pairs["dev"]
    if dev.empty:
        raise ValueError(f"recipe {recipe.name!r} has no dev pairs to fit the fusion on; raise --dev-fraction "
                         "or --max-dev-pairs")
    reward_chosen, reward_rejected = score_pairs(dev, reward)
    cosine_chosen, cosine_rejected = score_pairs(dev, retriever)
    w_r, w_s = fit_weights(reward_chosen - reward_rejected, cosine_chosen - cosine_rejected)

    rows = labelled_rows(recipe, prepared.dev_lists, dev)
    fused = w_r * reward(rows) + w_s * retriever(rows)
    labels = rows["label"].to_numpy(dtype=np.int64)
    calibrator, ece = choose_calibration(fused, labels, rows["group"].astype(str).to_numpy(), recipe.train.seed)
    measured = {
        "dev_pairs": len(dev),
        "dev_accuracy": {
            "reward": pairwise_accuracy(reward_chosen, reward_rejected),
            "retriever": pairwise_accuracy(cosine_chosen, cosine_rejected),
            "fused": pairwise_accuracy(w_r * reward_chosen + w_s * cosine_chosen,
                                       w_r * reward_rejected + w_s * cosine_rejected),
        },
        "calibration_rows": len(rows),
        "calibration_positive_rate": float(labels.mean()) if len(labels) else float("nan"),
        "held_out_ece": ece,
        "dev_ece_raw_sigmoid": expected_calibration_error(1.0 / (1.0 + np.exp(-fused)), labels),
        "calibration": calibrator.method,
        "dev_ece_after_refit": expected_calibration_error(calibrator.apply(fused), labels),
    }
    # NOTE: the first-stage weight stays 0 because no prepared dataset carries a caller's
    # first-stage score. Fitting it needs dev pairs with that score as a third feature.
    fusion = FusionModel(
        reward_weight=w_r, retriever_weight=w_s, bias=0.0, calibrator=calibrator,
        metadata={"fit_on": "dev", "recipe": recipe.name, "method": "logistic regression on pair differences",
                  "calibration_choice": "lower held-out ECE of platt and isotonic", **ece},
    )
    return fusion, measured


def main(argv: Sequence[str] | None = None) -> int:
    """Fit fusion weights and calibration for the recipe's reward model and merged retriever."""
    from prefrank.errors import ModelLoadError, PrefrankError
    from prefrank.retrieval.encoder import load_bi_encoder

    args = step_parser("python -m training.fit_fusion", __doc__.split("\n")[0]).parse_args(argv)
    configure_logging()
    try:
        recipe, prepared, reward_dir = load_step_inputs(args)
        steps = {name: read_step(recipe, name, name) for name in ("distill", "merge")}
        check_inputs_current(recipe, reward_dir, steps)
        merged = work_dir(recipe) / MERGED_DIR
        if not merged.is_dir():
            raise ModelLoadError(f"no merged retriever at {merged}; run `make merge RECIPE={recipe.name}` first")
        reward = cached(reward_scorer(load_cross_encoder(reward_dir, recipe.train.max_length),
                                      recipe.eval.batch_size))
        retriever = cached(cosine_text_scorer(load_bi_encoder(merged, "cpu", 32)))
        fusion, measured = fit_fusion(recipe, prepared, reward, retriever)
    except (PrefrankError, ValueError) as err:
        print(f"error: {getattr(err, 'message', err)}", file=sys.stderr)
        return 2
    path = work_dir(recipe) / FUSION_FILE
    save_fusion(fusion, path)
    write_step(recipe, "fit-fusion", {**measured, "fusion": fusion.to_json(), "reward": str(reward_dir),
                                      "retriever": str(merged), "merge_created": steps["merge"].get("created")})
    accuracy = measured["dev_accuracy"]
    print(f"weights: reward {fusion.reward_weight:.4f}, retriever {fusion.retriever_weight:.4f}; dev accuracy "
          f"reward {accuracy['reward']:.4f}, retriever {accuracy['retriever']:.4f}, fused {accuracy['fused']:.4f}")
    print("held-out ECE: " + ", ".join(f"{k[4:]} {v:.4f}" for k, v in measured["held_out_ece"].items())
          + f"; chosen {measured['calibration']}; raw sigmoid(f) on all of dev: {measured['dev_ece_raw_sigmoid']:.4f}")
    print(f"fusion: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
