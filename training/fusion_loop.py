"""Shared pieces of the fusion loop: ``make distill``, ``merge``, ``fit-fusion``, ``eval`` and ``promote``.

Each step reads the recipe, re-prepares its data with the split settings the reward model was
trained with (so dev and test hold the same query groups in every step), and leaves its output
in the recipe's work directory ``<fuse.work_dir>/<recipe>/``::

    distilled/      bi-encoder fine-tuned on reward margins      (make distill)
    merged/         (1 - alpha) * base + alpha * distilled       (make merge)
    fusion.json     fusion weights and calibration               (make fit-fusion)
    <step>.json     what each step measured, read by the report

``make eval`` turns the work directory into an immutable bundle under
``<fuse.models_dir>/<recipe>/`` and writes its report; ``make promote`` points that directory's
``current`` at it. Each recipe has its own models directory, since a translation bundle and a
search bundle have different test metrics and serve different callers. Ranking metrics come from
pytrec_eval (the trec_eval implementation), calibration curves from scikit-learn.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from prefrank.errors import ModelLoadError
from training.prepare import PreparedData
from training.recipe import Recipe

logger = logging.getLogger(__name__)

# [prepare] settings that decide which query groups land in dev and test.
SPLIT_SETTINGS = ("split_seed", "dev_fraction", "test_fraction")
DISTILLED_DIR = "distilled"
MERGED_DIR = "merged"
FUSION_FILE = "fusion.json"
RETRIEVAL_DEPTH = 100
ECE_BINS = 10


def work_dir(recipe: Recipe) -> pathlib.Path:
    return pathlib.Path(recipe.fuse.work_dir) / recipe.name


def recipe_models_dir(recipe: Recipe) -> pathlib.Path:
    """Return the recipe's models directory, ``<fuse.models_dir>/<recipe>``; PREFRANK_MODELS_DIR serves it."""
    return pathlib.Path(recipe.fuse.models_dir) / recipe.name


def write_step(recipe: Recipe, step: str, data: dict[str, Any]) -> pathlib.Path:
    """Write ``<work_dir>/<step>.json`` atomically, stamped with its creation time."""
    directory = work_dir(recipe)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{step}.json"
    temporary = path.with_name(f".{path.name}.tmp")
    stamped = {"created": datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds"), **data}
    temporary.write_text(json.dumps(stamped, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


# Each step's record names the inputs it was built from: step (also its make target) -> (key in
# its record, the step or reward model that key refers to).
_INPUTS = {
    "merge": (("teacher", "reward"), ("distill_created", "distill")),
    "fit-fusion": (("reward", "reward"), ("merge_created", "merge")),
}


def check_inputs_current(recipe: Recipe, reward_dir: pathlib.Path, steps: dict[str, dict[str, Any]]) -> None:
    """Raise unless each step was built from the current reward model and the current earlier step.

    Re-running ``make train-reward`` or ``make distill`` makes the later outputs stale; mixing
    them would pair fusion weights with a reward model they were not fit for.

    Raises:
        ModelLoadError: a step is stale; the message names the make target to re-run.
    """
    distill = steps.get("distill")
    if distill is not None and distill.get("teacher") != str(reward_dir):
        raise ModelLoadError(f"the distilled retriever was trained with reward model {distill.get('teacher')}, "
                             f"not the latest {reward_dir}; run `make distill RECIPE={recipe.name}` again")
    for step, links in _INPUTS.items():
        record = steps.get(step)
        if record is None:
            continue
        for key, source in links:
            expected = str(reward_dir) if source == "reward" else steps.get(source, {}).get("created")
            if expected is not None and record.get(key) != expected:
                raise ModelLoadError(
                    f"the {step} output is older than its input ({source}: {record.get(key)} vs {expected}); "
                    f"run `make {step} RECIPE={recipe.name}` again"
                )


def read_step(recipe: Recipe, step: str, make_target: str) -> dict[str, Any]:
    """Return what an earlier step wrote.

    Raises:
        ModelLoadError: the step has not run for this recipe; the message names its make target.
    """
    path = work_dir(recipe) / f"{step}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path} is missing or unreadable ({err}); run `make {make_target} "
                             f"RECIPE={recipe.name}` first") from err


def step_parser(prog: str, description: str) -> argparse.ArgumentParser:
    from training.recipe import add_override_flags

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--recipe", required=True, help="recipe name under recipes/ or a path to a .toml file")
    add_override_flags(parser)
    return parser


def load_step_inputs(args: argparse.Namespace) -> tuple[Recipe, PreparedData, pathlib.Path]:
    """Load the recipe, the reward model directory and the data prepared as the reward model's was.

    Raises:
        ModelLoadError: the recipe has no trained reward model.
        ConfigError: the recipe is invalid.
    """
    from prefrank.errors import ConfigError
    from training.pipeline import latest_artifact, load_and_prepare, read_manifest
    from training.recipe import load_recipe, overrides_from_args, recipe_from_dict

    overrides = overrides_from_args(args)
    recipe = load_recipe(args.recipe, overrides)
    reward_dir = latest_artifact(recipe)
    trained_with = read_manifest(reward_dir).get("recipe")
    if trained_with:
        # The reward model's split settings define dev and test, so a later step may not change them.
        trained = recipe_from_dict(trained_with).prepare
        for name in SPLIT_SETTINGS:
            override = overrides.get("prepare", {}).get(name)
            if override is not None and override != getattr(trained, name):
                raise ConfigError(
                    f"--{name.replace('_', '-')} {override} differs from the reward model's {getattr(trained, name)} "
                    f"({reward_dir}); the split must stay the same in every step, so retrain the reward model "
                    "with the new value first"
                )
        recipe = dataclasses.replace(recipe, prepare=recipe_from_dict(trained_with, overrides).prepare)
    prepared = load_and_prepare(recipe)
    for split in ("train", "dev", "test"):
        if prepared.pairs[split].empty:
            raise ConfigError(
                f"recipe {recipe.name!r} has no {split} pairs after preparation; raise --{split}-fraction "
                "or the pair limits (--max-pairs, --max-dev-pairs, --max-test-pairs), or check the source data"
                if split != "train" else
                f"recipe {recipe.name!r} has no train pairs after preparation; check the source data and "
                "--max-pairs"
            )
    if recipe.fuse.max_queries:
        for name in ("dev_lists", "test_lists"):
            lists = getattr(prepared, name)
            if lists is not None:
                first_groups = set(pd.unique(lists["group"])[:recipe.fuse.max_queries])
                setattr(prepared, name, lists[lists["group"].isin(first_groups)].reset_index(drop=True))
    return recipe, prepared, reward_dir


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- graded lists, qrels and corpus ---------------------------------------------------------------

def gains(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Integer gain of each graded score: how many thresholds it reaches (0 below the first)."""
    return np.searchsorted(np.asarray(thresholds, dtype=np.float64), np.asarray(scores, dtype=np.float64),
                           side="right").astype(np.int64)


def relevant(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Binary labels for calibration: 1 where the score reaches the last threshold."""
    return (np.asarray(scores, dtype=np.float64) >= thresholds[-1]).astype(np.int64)


@dataclass
class RankingTask:
    """Queries with their judged documents and the documents ranking may return.

    In corpus mode (search) every query ranks the whole corpus; otherwise each query ranks
    only its own graded list (translation candidates, recommended items).
    """

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    documents: dict[str, str]
    corpus_mode: bool
    #: Query id -> the document ids of its list (list mode only).
    lists: dict[str, list[str]]


def ranking_task(lists: pd.DataFrame | None, recipe: Recipe, corpus: dict[str, str] | None,
                 seed: int = 13) -> RankingTask | None:
    """Build a ranking task from graded lists; None when the source has no graded lists.

    With a corpus, list candidates are mapped to corpus ids by their text and the corpus is cut
    to ``fuse.max_corpus_docs`` (every judged document kept, the rest a seeded random fill).
    """
    if lists is None or lists.empty:
        return None
    thresholds = recipe.fuse.gain_thresholds
    # A query id per (group, query): a group may hold several queries, e.g. one session.
    query_ids = lists["group"].astype(str) + "\t" + lists["query"]
    lists = lists.assign(gain=gains(lists["score"].to_numpy(), thresholds), qid=query_ids)
    queries = dict(zip(lists["qid"], lists["query"], strict=True))
    qrels: dict[str, dict[str, int]] = {}
    if corpus is not None:
        by_text = {text: doc_id for doc_id, text in corpus.items()}
        missing = 0
        for qid, text, gain in zip(lists["qid"], lists["candidate"], lists["gain"], strict=True):
            doc_id = by_text.get(text)
            if doc_id is None:
                missing += 1
                continue
            qrels.setdefault(qid, {})[doc_id] = int(gain)
        if missing:
            raise ValueError(f"{missing} of {len(lists)} judged candidates are not in the corpus by their text; "
                             "the corpus and the graded lists must be normalised the same way")
        documents = _cut_corpus(corpus, {d for judged in qrels.values() for d in judged},
                                recipe.fuse.max_corpus_docs, seed)
        return RankingTask(queries, qrels, documents, True, {})
    documents, members = {}, {}
    for qid, frame in lists.groupby("qid", sort=False):
        ids = [f"{qid}#{i}" for i in range(len(frame))]
        documents.update(zip(ids, frame["candidate"], strict=True))
        qrels[qid] = {doc_id: int(gain) for doc_id, gain in zip(ids, frame["gain"], strict=True)}
        members[qid] = ids
    return RankingTask(queries, qrels, documents, False, members)


def _cut_corpus(corpus: dict[str, str], keep: set[str], limit: int, seed: int) -> dict[str, str]:
    if not limit or len(corpus) <= limit:
        return corpus
    rest = sorted(set(corpus) - keep)
    rng = np.random.default_rng(seed)
    fill = rng.choice(len(rest), size=max(0, limit - len(keep)), replace=False)
    chosen = keep | {rest[i] for i in fill}
    return {doc_id: text for doc_id, text in corpus.items() if doc_id in chosen}


def load_corpus(recipe: Recipe) -> dict[str, str] | None:
    """Return the recipe's document corpus (doc id -> text) for search recipes, else None.

    Texts are normalised as preparation normalises candidates, so judged candidates find their
    corpus entry by text.
    """
    if recipe.source.kind != "scifact":
        return None
    from training.pipeline import data_dir
    from training.prepare import normalise_text
    from training.sources import read_scifact_corpus

    path = recipe.source.options.get("corpus", "scifact/corpus.csv")
    return {doc_id: normalise_text(text) for doc_id, text in read_scifact_corpus(data_dir() / path).items()}


# --- retrieval, reranking and metrics ------------------------------------------------------------

# Ranked candidates per query id: (document id, retriever cosine) pairs, best first.
Retrieval = dict[str, list[tuple[str, float]]]


def retrieve(encoder: Any, task: RankingTask, depth: int = RETRIEVAL_DEPTH) -> Retrieval:
    """Rank documents for every query by retriever cosine.

    Corpus mode embeds the corpus into a flat FAISS index (prefrank's VectorIndex, as the service
    builds it) and searches the top ``depth``. List mode scores each query's own list.

    Args:
        encoder: A ``prefrank.retrieval.encoder.BiEncoder``.
    """
    from prefrank.retrieval.vector_index import IndexSpec, VectorIndex

    query_ids = list(task.queries)
    query_vectors = encoder.encode([task.queries[q] for q in query_ids])
    if task.corpus_mode:
        doc_ids = list(task.documents)
        logger.info("Embedding %d documents into a flat FAISS index", len(doc_ids))
        vectors = encoder.encode([task.documents[d] for d in doc_ids], show_progress_bar=True)
        index = VectorIndex(IndexSpec(dimension=vectors.shape[1]))
        index.add(np.arange(len(doc_ids), dtype=np.int64), vectors)
        scores, ids = index.search(query_vectors, depth)
        return {q: [(doc_ids[i], float(s)) for s, i in zip(scores[row], ids[row], strict=True) if i >= 0]
                for row, q in enumerate(query_ids)}
    texts = list(dict.fromkeys(task.documents.values()))
    vectors = dict(zip(texts, encoder.encode(texts, show_progress_bar=len(texts) > 2000), strict=True))
    run: Retrieval = {}
    for row, q in enumerate(query_ids):
        members = task.lists[q]
        cosines = [float(np.dot(query_vectors[row], vectors[task.documents[d]])) for d in members]
        run[q] = sorted(zip(members, cosines, strict=True), key=lambda item: -item[1])
    return run


def rerank(task: RankingTask, retrieved: Retrieval, score: Callable[[pd.DataFrame], np.ndarray],
           depth: int) -> dict[str, list[tuple[str, float]]]:
    """Rescore the top ``depth`` of each query's retrieval; the rest keep their order below them.

    Args:
        score: Takes a frame with ``query, text, cosine`` and returns one score per row.
    """
    rows = [(q, d, task.queries[q], task.documents[d], cosine)
            for q, hits in retrieved.items() for d, cosine in hits[:depth]]
    frame = pd.DataFrame(rows, columns=["qid", "doc", "query", "text", "cosine"])
    scores = score(frame) if len(frame) else np.zeros(0)
    run: dict[str, list[tuple[str, float]]] = {q: [] for q in retrieved}
    for q, d, value in zip(frame["qid"], frame["doc"], scores, strict=True):
        run[q].append((d, float(value)))
    for q, hits in retrieved.items():
        head = sorted(run[q], key=lambda item: -item[1])
        floor = min((v for _, v in head), default=0.0)
        # Documents below the reranked depth keep their retrieval order, under every reranked one.
        tail = [(d, floor - 1.0 - position) for position, (d, _) in enumerate(hits[depth:])]
        run[q] = head + tail
    return run


def ranking_metrics(task: RankingTask, run: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    """Return mean NDCG@10, MRR@10 and (corpus mode) Recall@100 over the judged queries, and their count."""
    per_query = ranking_per_query(task, run)
    if not per_query:
        return {}
    metrics = {name: float(np.mean(values)) for name, values in per_query.items()}
    metrics["queries"] = len(next(iter(per_query.values())))
    return metrics


def ranking_per_query(task: RankingTask, run: dict[str, list[tuple[str, float]]]) -> dict[str, np.ndarray]:
    """Return each judged query's NDCG@10, MRR@10 and (corpus mode) Recall@100 from pytrec_eval.

    Queries without a relevant document are left out, since no ranking can score on them.
    """
    from training.eval_search import evaluate_per_query

    qrels = {q: judged for q, judged in sorted(task.qrels.items()) if any(g > 0 for g in judged.values())}
    if not qrels:
        return {}
    # trec_eval ranks by score; ranks become scores so ties cannot reorder documents.
    trec_run = {q: {d: float(len(hits) - rank) for rank, (d, _) in enumerate(hits)} for q, hits in run.items()}
    per_query = {name: np.asarray(values) for name, values in evaluate_per_query(trec_run, qrels).items()}
    if not task.corpus_mode and all(len(members) <= RETRIEVAL_DEPTH for members in task.lists.values()):
        # Every list fits in the top 100, so recall@100 is 1 by construction and measures nothing.
        per_query.pop("recall@100", None)
    return per_query


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over equal-width probability bins: sum over bins of (bin share) * |mean label - mean probability|."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if len(probabilities) == 0:
        return float("nan")
    which = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(labels[mask].mean() - probabilities[mask].mean())
    return float(error)


# --- scorers --------------------------------------------------------------------------------------

def load_cross_encoder(directory: pathlib.Path, max_length: int) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(directory), device="cpu", local_files_only=True, max_length=max_length)


def labelled_rows(recipe: Recipe, lists: pd.DataFrame | None, pairs: pd.DataFrame) -> pd.DataFrame:
    """Return rows with a binary label for calibration and ECE.

    Graded lists give label 1 where the score reaches the last of ``fuse.gain_thresholds``.
    Without lists, each pair's chosen text is 1 and its rejected text 0.
    """
    if lists is not None and len(lists):
        rows = graded_rows(lists)
        return rows.assign(label=relevant(rows["score"].to_numpy(), recipe.fuse.gain_thresholds))
    chosen = pairs[["group", "query", "chosen"]].set_axis(["group", "query", "text"], axis=1).assign(label=1)
    rejected = pairs[["group", "query", "rejected"]].set_axis(["group", "query", "text"], axis=1).assign(label=0)
    return pd.concat([chosen, rejected], ignore_index=True)


def graded_rows(lists: pd.DataFrame) -> pd.DataFrame:
    """Return a graded list frame as scorer rows (``query, text``) with its ``score``."""
    return lists.rename(columns={"candidate": "text"})[["group", "query", "text", "score"]].reset_index(drop=True)
