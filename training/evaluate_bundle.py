"""Evaluate the fused models on the test split, write a bundle and its report; ``make eval RECIPE=<name>``.

The ablation compares four configurations on the test split, which no step trains or tunes on:

1. base retriever: the bundled all-MiniLM-L6-v2 cosine;
2. + reward rerank: the base retriever's top ``fuse.rerank_depth`` (search) or whole list,
   reordered by the reward model's logit;
3. merged retriever: the distilled-and-merged bi-encoder's cosine alone;
4. + fusion: the merged retriever's candidates ordered by the fitted fused score, with
   calibrated relevance.

Metrics:

- pairwise accuracy on the test pairs;
- NDCG@10, MRR@10 and (search) Recall@100 on the graded test lists, with pytrec_eval;
- ECE of each configuration's relevance on the test rows, using the fixed maps (cos + 1) / 2 and
  sigmoid(logit) for rows 1 to 3 and the calibrator for row 4;
- pairwise accuracy on a slice of hh-rlhf harmless test pairs (the safety slice);
- speed through prefrank's own Ranker (the serving code path, in process): median latency of
  reranking 100 candidates, and pairs per second.

The models and fusion become a bundle ``<fuse.models_dir>/<recipe>/<recipe>-<UTC time>/`` whose manifest
carries the configuration-4 test metrics (what ``make promote`` compares). The report goes to
``<fuse.reports_dir>/<bundle>/report.md`` with three PNG plots.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prefrank.scoring.fusion import FusionModel, load_fusion
from training.evaluate_reward import (
    TextScorer,
    cached,
    cosine_text_scorer,
    pairwise_accuracy,
    reward_scorer,
    score_pairs,
)
from training.fusion_loop import (
    FUSION_FILE,
    MERGED_DIR,
    RankingTask,
    check_inputs_current,
    configure_logging,
    expected_calibration_error,
    labelled_rows,
    load_corpus,
    load_cross_encoder,
    load_step_inputs,
    ranking_metrics,
    ranking_per_query,
    ranking_task,
    read_step,
    recipe_models_dir,
    rerank,
    retrieve,
    step_parser,
    work_dir,
)
from training.merge import TIE_BREAK
from training.prepare import PreparedData
from training.recipe import Recipe

logger = logging.getLogger(__name__)

SPEED_CANDIDATES = 100
# data_hashes key of everything the test metrics were measured on; promotion compares it.
EVALUATION_HASH = "test_evaluation"
# Two-sided p-value below which a step's change counts as real rather than noise.
SIGNIFICANCE = 0.05
METRIC_COLUMNS = ("accuracy", "ndcg@10", "mrr@10", "recall@100", "ece", "safety_accuracy", "pairs_per_second",
                  "p50_ms")
HEADERS = {"accuracy": "pairwise acc.", "ndcg@10": "NDCG@10", "mrr@10": "MRR@10", "recall@100": "Recall@100",
           "ece": "ECE", "safety_accuracy": "safety acc.", "pairs_per_second": "pairs/s", "p50_ms": "p50 ms (100)"}


@dataclass
class Configuration:
    """One ablation row: how it scores a (query, text) row, maps scores to relevance and ranks."""

    name: str
    pair_score: TextScorer
    relevance: Callable[[np.ndarray], np.ndarray]
    run: dict[str, list[tuple[str, float]]] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    #: Metric name -> the per-pair or per-query values its mean is taken over, for paired tests.
    samples: dict[str, np.ndarray] = field(default_factory=dict)


def pair_outcomes(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """Return 1 per pair ordered right, 0 per pair ordered wrong and 0.5 per tie."""
    return (chosen > rejected) + 0.5 * (chosen == rejected)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(values, dtype=np.float64)))


def _cosine_relevance(values: np.ndarray) -> np.ndarray:
    return (np.asarray(values, dtype=np.float64) + 1.0) / 2.0


def safety_pairs(recipe: Recipe) -> pd.DataFrame | None:
    """Return a seeded sample of the safety recipe's test pairs, or None when the recipe names none."""
    from training.pipeline import load_and_prepare
    from training.recipe import load_recipe

    if not recipe.fuse.safety_recipe or not recipe.fuse.safety_pairs:
        return None
    prepared = load_and_prepare(load_recipe(recipe.fuse.safety_recipe))
    test = prepared.pairs["test"]
    if len(test) > recipe.fuse.safety_pairs:
        test = test.sample(n=recipe.fuse.safety_pairs, random_state=13)
    return test.reset_index(drop=True)


def measure_speed(make_ranker: Callable[[], Any], query: str, texts: Sequence[str], runs: int) -> dict[str, float]:
    """Measure the median latency of reranking texts with a prefrank Ranker, after one warm-up call."""
    from prefrank.ranking import Candidate

    ranker = make_ranker()
    candidates = [Candidate(id=str(i), text=text) for i, text in enumerate(texts)]
    ranker.rerank(query, candidates)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        ranker.rerank(query, candidates)
        timings.append(time.perf_counter() - started)
    ranker.scorer.close()
    median = statistics.median(timings)
    return {"p50_ms": 1000 * median, "pairs_per_second": len(texts) / median}


def speed_texts(task: RankingTask | None, rows: pd.DataFrame) -> tuple[str, list[str]]:
    """Pick one test query and 100 candidate texts (its own first, then other test rows)."""
    query = rows["query"].iloc[0]
    texts = list(dict.fromkeys(rows["text"]))
    if task is not None and task.corpus_mode:
        texts = list(dict.fromkeys([*texts, *task.documents.values()]))
    # Lists shorter than 100 (translation: 15 per source) are padded with numbered copies.
    while len(texts) < SPEED_CANDIDATES:
        texts = texts + [f"{text} ({len(texts)})" for text in texts]
    return query, texts[:SPEED_CANDIDATES]


def evaluate(recipe: Recipe, prepared: PreparedData, reward_dir: pathlib.Path) -> dict[str, Any]:
    """Run the four configurations on the test split; return rows, plots' data and test metrics."""
    from prefrank.artifacts import bundled_retriever_path
    from prefrank.config import ServerConfig
    from prefrank.ranking import Ranker
    from prefrank.retrieval.encoder import load_bi_encoder
    from prefrank.runtime import load_scorer
    from prefrank.scoring.cosine import CosineScorer

    merged_dir = work_dir(recipe) / MERGED_DIR
    fusion = load_fusion(work_dir(recipe) / FUSION_FILE)
    base = load_bi_encoder(bundled_retriever_path(), "cpu", 32)
    merged = load_bi_encoder(merged_dir, "cpu", 32)
    reward = cached(reward_scorer(load_cross_encoder(reward_dir, recipe.train.max_length), recipe.eval.batch_size))
    base_cosine, merged_cosine = cached(cosine_text_scorer(base)), cached(cosine_text_scorer(merged))

    def fused(rows: pd.DataFrame) -> np.ndarray:
        return fusion.fuse(reward(rows), merged_cosine(rows))

    configurations = [
        Configuration("base retriever", base_cosine, _cosine_relevance),
        Configuration("+ reward rerank", reward, _sigmoid),
        Configuration("merged retriever", merged_cosine, _cosine_relevance),
        Configuration("+ fusion", fused, fusion.relevance),
    ]

    # Ranking: retrieve with each retriever, rerank the head with the reward model or the fusion.
    task = ranking_task(prepared.test_lists, recipe, load_corpus(recipe), seed=recipe.train.seed)
    if task is not None:
        depth = recipe.fuse.rerank_depth if task.corpus_mode else 1_000_000
        base_run, merged_run = retrieve(base, task), retrieve(merged, task)
        configurations[0].run = base_run
        configurations[1].run = rerank(task, base_run, lambda rows: reward(rows), depth)
        configurations[2].run = merged_run
        configurations[3].run = rerank(
            task, merged_run, lambda rows: fusion.fuse(reward(rows), rows["cosine"].to_numpy()), depth)

    # Pairs, calibration and the safety slice.
    pairs = prepared.pairs["test"]
    rows = labelled_rows(recipe, prepared.test_lists, prepared.pairs["test"])
    labels = rows["label"].to_numpy()
    safety = safety_pairs(recipe)
    for configuration in configurations:
        chosen, rejected = score_pairs(pairs, configuration.pair_score)
        row_scores = configuration.pair_score(rows[["query", "text"]])
        configuration.scores = {"chosen": chosen, "rejected": rejected, "rows": row_scores}
        configuration.metrics["accuracy"] = pairwise_accuracy(chosen, rejected)
        configuration.samples["accuracy"] = pair_outcomes(chosen, rejected)
        if configuration.run is not None:
            configuration.metrics.update(ranking_metrics(task, configuration.run))
            configuration.samples.update(ranking_per_query(task, configuration.run))
        configuration.metrics["ece"] = expected_calibration_error(configuration.relevance(row_scores), labels)
        if safety is not None:
            safe, unsafe = score_pairs(safety, configuration.pair_score)
            configuration.metrics["safety_accuracy"] = pairwise_accuracy(safe, unsafe)
            configuration.samples["safety_accuracy"] = pair_outcomes(safe, unsafe)
        logger.info("%s: %s", configuration.name,
                    ", ".join(f"{k} {v:.4f}" for k, v in configuration.metrics.items()))

    # Speed through the serving Ranker.
    query, texts = speed_texts(task, rows)
    config = ServerConfig(reward_model=str(reward_dir))
    runs = recipe.fuse.speed_runs
    makers = [
        lambda: Ranker(config, base, CosineScorer(base), index=None),
        lambda: Ranker(config, base, load_scorer(config, base)[0], index=None),
        lambda: Ranker(config, merged, CosineScorer(merged), index=None),
        lambda: Ranker(config, merged, load_scorer(config, merged)[0], index=None, fusion=fusion),
    ]
    for configuration, make in zip(configurations, makers, strict=True):
        configuration.metrics.update(measure_speed(make, query, texts, runs))
    evaluation = {
        "qrels": task.qrels if task is not None else {},
        "documents": sorted(task.documents) if task is not None else [],
        "safety_pairs": data_hash(safety) if safety is not None else "",
        "settings": {name: getattr(recipe.fuse, name) for name in (
            "rerank_depth", "gain_thresholds", "max_queries", "max_corpus_docs", "safety_recipe", "safety_pairs")},
    }
    digest = hashlib.sha256(json.dumps(evaluation, sort_keys=True).encode("utf-8")).hexdigest()
    return {"configurations": configurations, "labels": labels, "task": task, "rows": len(rows),
            "pairs": len(pairs), "safety_pairs": 0 if safety is None else len(safety), "fusion": fusion,
            "evaluation_hash": f"sha256:{digest}"}


# --- bundle ----------------------------------------------------------------------------------------

def data_hash(frame: pd.DataFrame) -> str:
    """Return the sha256 of a frame's CSV text, which identifies the exact rows a step used."""
    return "sha256:" + hashlib.sha256(frame.to_csv(index=False).encode("utf-8")).hexdigest()


def write_candidate_bundle(recipe: Recipe, prepared: PreparedData, reward_dir: pathlib.Path,
                           result: dict[str, Any], steps: dict[str, dict[str, Any]]) -> Any:
    """Write the merged retriever, reward model and fusion as a new bundle with test metrics."""
    from prefrank.artifacts import bundled_retriever_path, model_version
    from prefrank.bundles import current_version, write_bundle

    fused = result["configurations"][-1].metrics
    test = {name: value for name, value in fused.items()
            if name not in ("pairs_per_second", "p50_ms", "queries") and np.isfinite(value)}
    dev = {"accuracy": steps["fit-fusion"]["dev_accuracy"]["fused"],
           **{f"retriever_{k}": v for k, v in steps["merge"]["dev"].items() if k != "queries"}}
    version = f"{recipe.name}-{datetime.datetime.now(datetime.UTC).strftime('%Y%m%dT%H%M%SZ')}"
    models_dir = recipe_models_dir(recipe)
    parent = current_version(models_dir) if models_dir.is_dir() else None
    hashes = {str(pathlib.Path(path).name): f"sha256:{digest}"
              for path, digest in prepared.report.get("files", {}).items()}
    hashes.update({f"{split}_pairs": data_hash(frame) for split, frame in prepared.pairs.items()})
    # The test queries, judged documents, corpus cut, safety slice and settings behind the test metrics.
    hashes[EVALUATION_HASH] = result["evaluation_hash"]
    return write_bundle(
        models_dir, version, retriever_dir=work_dir(recipe) / MERGED_DIR, reward_dir=reward_dir,
        fusion=result["fusion"],
        base_models={"retriever": f"all-MiniLM-L6-v2 ({model_version(bundled_retriever_path())})",
                     "reward": str(reward_dir)},
        data_hashes=hashes,
        metrics={"dev": dev, "test": test,
                 "speed": {k: fused[k] for k in ("pairs_per_second", "p50_ms")}},
        alpha=float(steps["merge"]["alpha"]), parents=[parent] if parent else [], recipe=recipe.name,
    )


# --- report ----------------------------------------------------------------------------------------

def ablation_table(configurations: Sequence[Configuration], alpha: float) -> str:
    columns = [c for c in METRIC_COLUMNS if any(c in conf.metrics for conf in configurations)]
    lines = ["| configuration | " + " | ".join(HEADERS[c] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for conf in configurations:
        name = conf.name if conf.name != "merged retriever" else f"merged retriever (alpha {alpha:.2f})"
        cells = []
        for column in columns:
            value = conf.metrics.get(column)
            cells.append("n/a" if value is None else (f"{value:.1f}" if column in ("pairs_per_second", "p50_ms")
                                                      else f"{value:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(metric: str, before: Configuration, after: Configuration) -> str:
    """Judge one metric's change: a paired t-test over pairs or queries where samples exist.

    "helps" and "hurts" need p < SIGNIFICANCE. ECE has no per-item samples, so its direction
    alone is reported.
    """
    from scipy.stats import ttest_rel

    delta = after.metrics[metric] - before.metrics[metric]
    if metric not in before.samples or metric not in after.samples:
        if round(delta, 3) == 0:
            return "no change"
        lower_is_better = metric == "ece"
        improved = delta < 0 if lower_is_better else delta > 0
        return "better" if improved else "worse"
    first, second = before.samples[metric], after.samples[metric]
    if np.array_equal(first, second):
        return "no change"
    p_value = float(ttest_rel(second, first).pvalue)
    if not p_value < SIGNIFICANCE:
        return f"no significant change, p = {p_value:.2f}"
    p_text = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"
    return f"{'helps' if delta > 0 else 'hurts'}, {p_text}"


def effects(configurations: Sequence[Configuration], key_metric: str) -> list[str]:
    """Write one sentence per step on what it changed, measured against the row it builds on."""
    base, reranked, merged, fused = configurations
    steps = [("Reranking with the reward model", reranked, base),
             ("Distilling and merging the retriever", merged, base),
             ("Fusing the reward model with the merged retriever", fused, reranked),
             ("Fusion against the merged retriever alone", fused, merged)]
    sentences = []
    for label, after, before in steps:
        parts = []
        for metric in dict.fromkeys([key_metric, "ndcg@10", "mrr@10", "accuracy", "safety_accuracy", "ece"]):
            if metric in after.metrics and metric in before.metrics:
                parts.append(f"{HEADERS[metric]} {before.metrics[metric]:.3f} -> {after.metrics[metric]:.3f} "
                             f"({verdict(metric, before, after)})")
        sentences.append(f"- {label} (vs {before.name}): " + "; ".join(parts) + ".")
    return sentences


def plot(result: dict[str, Any], steps: dict[str, dict[str, Any]], directory: pathlib.Path) -> list[str]:
    """Write calibration.png, alpha.png and histograms.png; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    configurations, labels = result["configurations"], result["labels"]
    files = []

    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect")
    for conf in configurations:
        if len(np.unique(labels)) < 2:
            break
        fraction, mean = calibration_curve(labels, conf.relevance(conf.scores["rows"]), n_bins=10)
        axes.plot(mean, fraction, marker="o", label=f"{conf.name} (ECE {conf.metrics['ece']:.3f})")
    axes.set(xlabel="predicted relevance", ylabel="share relevant", title="Calibration on the test split")
    axes.legend(fontsize=7)
    figure.savefig(directory / "calibration.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    files.append("calibration.png")

    merge = steps["merge"]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    alphas = [row["alpha"] for row in merge["sweep"]]
    for metric in dict.fromkeys([merge["metric"], "accuracy"]):
        axes.plot(alphas, [row["dev"].get(metric, np.nan) for row in merge["sweep"]], marker="o",
                  label=f"dev {metric}")
    axes.axvline(merge["alpha"], linestyle="--", color="grey", label=f"chosen alpha {merge['alpha']:.2f}")
    axes.set(xlabel="alpha (0 = base, 1 = distilled)", ylabel="metric", title="Merged retriever on dev")
    axes.legend(fontsize=7)
    figure.savefig(directory / "alpha.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    files.append("alpha.png")

    figure, grid = plt.subplots(1, len(configurations), figsize=(4 * len(configurations), 3))
    for axes, conf in zip(np.atleast_1d(grid), configurations, strict=True):
        chosen, rejected = conf.scores["chosen"], conf.scores["rejected"]
        edges = np.histogram_bin_edges(np.concatenate([chosen, rejected]), bins=30)
        axes.hist(chosen, bins=edges, alpha=0.6, label="preferred")
        axes.hist(rejected, bins=edges, alpha=0.6, label="rejected")
        axes.set(title=conf.name, xlabel="score")
        axes.legend(fontsize=7)
    figure.savefig(directory / "histograms.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    files.append("histograms.png")
    return files


def write_report(recipe: Recipe, bundle: Any, result: dict[str, Any], steps: dict[str, dict[str, Any]],
                 command: str) -> pathlib.Path:
    """Write ``<reports_dir>/<bundle>/report.md`` with the ablation table, step details and plots."""
    directory = pathlib.Path(recipe.fuse.reports_dir) / bundle.version
    directory.mkdir(parents=True, exist_ok=True)
    files = plot(result, steps, directory)
    configurations = result["configurations"]
    task = result["task"]
    if task is None:
        key = "accuracy"
    elif task.corpus_mode:
        key = "recall@100"
    else:
        key = "ndcg@10"
    merge, distill, fit = steps["merge"], steps["distill"], steps["fit-fusion"]
    tie_break = next((name for name in TIE_BREAK if name != merge["metric"] and name in merge["dev"]), None)
    fusion: FusionModel = result["fusion"]
    where = (f"{len(task.qrels)} test queries ranking a {len(task.documents):,}-document corpus"
             if task is not None and task.corpus_mode else
             f"{len(task.qrels)} test queries, each ranking its own graded list" if task is not None else
             "no graded lists (pairs only)")
    lines = [
        f"# Evaluation report: bundle {bundle.version}",
        "",
        f"Recipe `{recipe.name}`: {recipe.description}. Test split only: {result['pairs']} pairs, "
        f"{result['rows']} graded rows, {where}. Produced by `{command}`.",
        "",
        "## Ablation on the test split",
        "",
        ablation_table(configurations, merge["alpha"]),
        "",
        f"Safety slice: {result['safety_pairs']} hh-rlhf harmless test pairs (`{recipe.fuse.safety_recipe}`). "
        "Speed: prefrank's Ranker in process, reranking 100 candidates, median of "
        f"{recipe.fuse.speed_runs} runs; the reward rows use the serving backend (bf16 where the CPU has it). "
        "ECE: 10 equal-width bins; rows 1 to 3 use the fixed relevance maps, row 4 the fitted calibration.",
        "",
        "## What each step adds",
        "",
        "Each change is judged by a paired t-test (`scipy.stats.ttest_rel`) over the test pairs or queries: "
        f"\"helps\" or \"hurts\" needs p < {SIGNIFICANCE}, with no correction for the many comparisons, so "
        "expect about one false verdict in twenty. ECE has no per-item values, so only its direction is given.",
        "",
        *effects(configurations, key),
        "",
        "## Steps",
        "",
        f"- Distillation: {distill['triplets']} triplets ({distill['triplets_from_rejected']} with the rejected "
        f"text, {distill['mined_kept']} of {distill['mined_negatives']} mined negatives kept), teacher margins "
        f"scaled by {distill['teacher_scale']:.4f}, final loss {distill['train_loss']:.4f}, "
        f"{distill['examples_per_second']:.1f} training examples/s (each triplet once per loss).",
        f"- Merging: alpha {merge['alpha']:.2f} chosen by dev {merge['metric']} (ties broken by "
        f"{tie_break or 'nothing'}, then the smaller alpha); after reloading, "
        f"the saved model gives dev {merge['metric']} {merge['recheck_dev'].get(merge['metric'], float('nan')):.4f} "
        f"(sweep: {merge['dev'].get(merge['metric'], float('nan')):.4f}).",
        "",
        "  | alpha | " + " | ".join(k for k in merge["sweep"][0]["dev"] if k != "queries") + " |",
        "  |---:|" + "---:|" * len([k for k in merge["sweep"][0]["dev"] if k != "queries"]),
        *[f"  | {row['alpha']:.2f} | " + " | ".join(f"{v:.4f}" for k, v in row["dev"].items() if k != "queries")
          + " |" for row in merge["sweep"]],
        "",
        f"- Fusion: f = {fusion.reward_weight:.4f} * reward + {fusion.retriever_weight:.4f} * retriever "
        f"+ {fusion.bias:.4f}, fit on {fit['dev_pairs']} dev pairs (dev accuracy: reward "
        f"{fit['dev_accuracy']['reward']:.3f}, retriever {fit['dev_accuracy']['retriever']:.3f}, fused "
        f"{fit['dev_accuracy']['fused']:.3f}). Calibration: {fit['calibration']}, chosen by held-out ECE on dev "
        "(" + ", ".join(f"{k[4:]} {v:.4f}" for k, v in fit["held_out_ece"].items())
        + f"; the raw sigmoid(f) has ECE {fit['dev_ece_raw_sigmoid']:.4f} on dev).",
        "",
        "## Plots",
        "",
        *[f"![{name[:-4]}]({name})" for name in files],
        "",
        f"Bundle: `{bundle.directory}`. `make promote RECIPE={recipe.name}` points `current` at it unless it "
        "is worse than the current bundle (`make retrain` runs that step itself).",
        "",
    ]
    path = directory / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate the recipe's fused models on test, write the candidate bundle and its report."""
    from prefrank.errors import PrefrankError

    args = step_parser("python -m training.evaluate_bundle", __doc__.split("\n")[0]).parse_args(argv)
    configure_logging()
    try:
        recipe, prepared, reward_dir = load_step_inputs(args)
        steps = {name: read_step(recipe, name, name) for name in ("distill", "merge", "fit-fusion")}
        check_inputs_current(recipe, reward_dir, steps)
        result = evaluate(recipe, prepared, reward_dir)
        bundle = write_candidate_bundle(recipe, prepared, reward_dir, result, steps)
        overrides = list(argv if argv is not None else sys.argv[1:])
        overrides = [arg for i, arg in enumerate(overrides)
                     if arg != "--recipe" and (i == 0 or overrides[i - 1] != "--recipe")]
        command = f"make eval RECIPE={recipe.name}" + (f" ARGS=\"{' '.join(overrides)}\"" if overrides else "")
        report = write_report(recipe, bundle, result, steps, command)
    except (PrefrankError, ValueError) as err:
        print(f"error: {getattr(err, 'message', err)}", file=sys.stderr)
        return 2
    print(ablation_table(result["configurations"], steps["merge"]["alpha"]))
    print(f"bundle: {bundle.directory}")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
