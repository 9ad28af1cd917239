"""Distil the reward model into the bi-encoder retriever; ``make distill RECIPE=<name>``.

The student is the bundled all-MiniLM-L6-v2 bi-encoder. Its training data are triplets
(query, positive, negative): each training pair's (chosen, rejected), plus, with
``fuse.hard_negatives = "mined"``, negatives mined from the corpus by
``sentence_transformers.util.mine_hard_negatives``. The reward model scores every triplet. Two
sentence-transformers losses train the student together through ``SentenceTransformerTrainer``
(one dataset per loss, batches drawn in proportion):

- ``MarginMSELoss``: the student's cosine margin cos(q, pos) - cos(q, neg) regresses on the
  teacher's reward margin r(q, pos) - r(q, neg). Reward logits and cosines have different
  scales, so teacher margins are multiplied by std(student margins) / std(teacher margins)
  measured on the same triplets before training.
- ``MultipleNegativesRankingLoss``: in-batch contrastive loss over (query, positive, negative),
  the negative acting as a hard negative, with batches free of duplicate texts.

The distilled model goes to ``<fuse.work_dir>/<recipe>/distilled/``, its measurements to
``distill.json``.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from training.evaluate_reward import TextScorer, cached, cosine_text_scorer, reward_scorer
from training.fusion_loop import (
    DISTILLED_DIR,
    configure_logging,
    load_corpus,
    load_cross_encoder,
    load_step_inputs,
    step_parser,
    work_dir,
    write_step,
)
from training.prepare import PreparedData
from training.recipe import Recipe

logger = logging.getLogger(__name__)


def training_triplets(recipe: Recipe, prepared: PreparedData) -> pd.DataFrame:
    """Return up to ``fuse.distill_max_pairs`` (query, positive, negative) rows from the training pairs."""
    pairs = prepared.pairs["train"]
    limit = recipe.fuse.distill_max_pairs
    if limit and len(pairs) > limit:
        pairs = pairs.sample(n=limit, random_state=recipe.train.seed)
    frame = pairs.rename(columns={"chosen": "positive", "rejected": "negative"})[["query", "positive", "negative"]]
    return frame.assign(source="rejected").reset_index(drop=True)


def mined_triplets(recipe: Recipe, triplets: pd.DataFrame, model: Any) -> pd.DataFrame:
    """Mine one hard negative per (query, positive) from the corpus with sentence-transformers' miner.

    The corpus is the training texts plus corpus documents up to ``fuse.max_corpus_docs``. The
    top ``fuse.mined_range_min`` neighbours are skipped, since unlabelled positives sit there.
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    corpus = load_corpus(recipe)
    if corpus is None:
        logger.warning("Recipe %s has no corpus to mine; using the rejected texts only", recipe.name)
        return triplets.iloc[:0]
    texts = list(dict.fromkeys([*triplets["positive"], *triplets["negative"]]))
    known = set(texts)
    others = [text for text in corpus.values() if text not in known]
    limit = recipe.fuse.max_corpus_docs
    if limit and len(texts) + len(others) > limit:
        rng = np.random.default_rng(recipe.train.seed)
        keep = rng.choice(len(others), size=max(0, limit - len(texts)), replace=False)
        others = [others[i] for i in sorted(keep)]
    anchors = triplets[["query", "positive"]].drop_duplicates().reset_index(drop=True)
    mined = mine_hard_negatives(
        Dataset.from_pandas(anchors, preserve_index=False), model, anchor_column_name="query",
        positive_column_name="positive", corpus=texts + others, range_min=recipe.fuse.mined_range_min,
        range_max=recipe.fuse.mined_range_min + 20, num_negatives=1, sampling_strategy="top", use_faiss=True,
        output_format="triplet", batch_size=32,
    ).to_pandas()
    mined = mined.rename(columns={mined.columns[2]: "negative"})[["query", "positive", "negative"]]
    return mined.assign(source="mined")


def teacher_labels(triplets: pd.DataFrame, reward: TextScorer, cosine: TextScorer) -> tuple[np.ndarray, float]:
    """Return the teacher's reward margins and the scale that maps them onto the student's cosine margins.

    scale = std(student cosine margins) / std(teacher reward margins), so MarginMSE trains the
    student toward margins of its own magnitude.
    """

    def margins(score) -> np.ndarray:
        positive = score(triplets[["query", "positive"]].set_axis(["query", "text"], axis=1))
        negative = score(triplets[["query", "negative"]].set_axis(["query", "text"], axis=1))
        return positive - negative

    teacher_margin = margins(reward)
    student_margin = margins(cosine)
    spread = float(np.std(teacher_margin))
    scale = float(np.std(student_margin)) / spread if spread > 0 else 1.0
    return teacher_margin, scale


def distill(recipe: Recipe, prepared: PreparedData, reward_dir: pathlib.Path, output: pathlib.Path
            ) -> dict[str, Any]:
    """Fine-tune the bundled bi-encoder on reward margins and save it to output.

    Returns:
        What was measured: triplet counts, teacher scale, losses, seconds and training examples per second.
    """
    import torch
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from prefrank.artifacts import bundled_retriever_path
    from prefrank.retrieval.encoder import load_bi_encoder

    config = recipe.fuse
    torch.manual_seed(recipe.train.seed)
    base = str(bundled_retriever_path())
    student = SentenceTransformer(base, device="cpu", local_files_only=True)
    student.max_seq_length = config.distill_max_length

    # Build the triplets: rejected texts, plus mined negatives the teacher agrees are worse.
    triplets = training_triplets(recipe, prepared)
    # Cached, so the mined triplets scored for filtering are not scored again for the labels.
    reward = cached(reward_scorer(load_cross_encoder(reward_dir, recipe.train.max_length), recipe.eval.batch_size))
    cosine = cached(cosine_text_scorer(load_bi_encoder(base, "cpu", 32)))
    mined_kept = mined_total = 0
    if config.hard_negatives == "mined":
        mined = mined_triplets(recipe, triplets, student)
        mined_total = len(mined)
        if mined_total:
            gap, _ = teacher_labels(mined, reward, cosine)
            mined = mined[gap > config.mined_min_reward_gap]
            mined_kept = len(mined)
            triplets = pd.concat([triplets, mined], ignore_index=True)
        logger.info("Mined %d hard negatives, kept %d the reward model scores more than %.2f below the positive",
                    mined_total, mined_kept, config.mined_min_reward_gap)
    if triplets.empty:
        raise ValueError(f"recipe {recipe.name!r} has no training pairs to distil; check --distill-max-pairs "
                         "and the data report of `make train-reward`")
    teacher_margin, scale = teacher_labels(triplets, reward, cosine)
    del reward, cosine
    logger.info("Teacher margins: mean %.3f, std %.3f; scaled by %.4f to the student's cosine margins",
                float(np.mean(teacher_margin)), float(np.std(teacher_margin)), scale)

    # Train both losses with the sentence-transformers trainer.
    columns = {"query": triplets["query"].tolist(), "positive": triplets["positive"].tolist(),
               "negative": triplets["negative"].tolist()}
    datasets = DatasetDict({
        "margin": Dataset.from_dict({**columns, "label": (teacher_margin * scale).astype(np.float32).tolist()}),
        "contrastive": Dataset.from_dict(columns),
    })
    losses = {"margin": MarginMSELoss(student), "contrastive": MultipleNegativesRankingLoss(student)}
    scratch = output.parent / ".distill-trainer"
    arguments = SentenceTransformerTrainingArguments(
        output_dir=str(scratch), num_train_epochs=config.distill_epochs,
        per_device_train_batch_size=config.distill_batch_size, learning_rate=config.distill_learning_rate,
        warmup_steps=0.1, seed=recipe.train.seed, use_cpu=True, save_strategy="no", report_to="none",
        logging_steps=10, batch_sampler="no_duplicates", multi_dataset_batch_sampler="proportional",
        dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(model=student, args=arguments, train_dataset=datasets, loss=losses)
    started = time.perf_counter()
    try:
        outcome = trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started

    # Save the student in the sentence-transformers layout.
    if output.exists():
        shutil.rmtree(output)
    student.save(str(output))
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    # Every triplet is one training example per loss.
    examples = len(losses) * len(triplets) * config.distill_epochs
    return {
        "student_base": base,
        "teacher": str(reward_dir),
        "triplets": len(triplets),
        "triplets_from_rejected": int((triplets["source"] == "rejected").sum()),
        "mined_negatives": mined_total,
        "mined_kept": mined_kept,
        "teacher_margin_mean": float(np.mean(teacher_margin)),
        "teacher_margin_std": float(np.std(teacher_margin)),
        "teacher_scale": scale,
        "train_loss": float(outcome.training_loss),
        "loss_history": history,
        "seconds": seconds,
        "examples_per_second": examples / seconds if seconds else 0.0,
        "settings": {name: getattr(config, name) for name in (
            "distill_max_pairs", "distill_epochs", "distill_batch_size", "distill_learning_rate",
            "distill_max_length", "hard_negatives", "mined_range_min", "mined_min_reward_gap")},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Distil the recipe's latest reward model into the bundled bi-encoder."""
    from prefrank.errors import PrefrankError

    args = step_parser("python -m training.distill", __doc__.split("\n")[0]).parse_args(argv)
    configure_logging()
    try:
        recipe, prepared, reward_dir = load_step_inputs(args)
        output = work_dir(recipe) / DISTILLED_DIR
        output.parent.mkdir(parents=True, exist_ok=True)
        measured = distill(recipe, prepared, reward_dir, output)
    except PrefrankError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_step(recipe, "distill", measured)
    print(f"distilled {measured['triplets']} triplets in {measured['seconds']:.0f} s "
          f"({measured['examples_per_second']:.1f} training examples/s, each triplet once per loss), "
          f"final loss {measured['train_loss']:.4f}")
    print(f"model: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
