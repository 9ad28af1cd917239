"""Train a CrossEncoder reward model with the Bradley-Terry loss; ``make train-reward RECIPE=<name>``.

The loop is plain torch around ``CrossEncoder``'s own ``preprocess`` and forward, so one optimizer
step is two forward rows per pair. NOTE: ``CrossEncoderTrainer`` needs the ``datasets`` and
``accelerate`` packages and selects the best model through checkpoints on disk. This loop keeps
the best dev state in memory instead. ``BradleyTerryLoss`` has the trainer's loss signature, so
it also works there.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from prefrank.scoring.backends import cpu_supports_bf16
from training.bradley_terry import BradleyTerryLoss
from training.evaluate_reward import pairwise_accuracy, reward_scorer, score_pairs
from training.recipe import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Measurements of one training run: dev accuracy history, the best step and throughput."""

    best_dev_accuracy: float = float("nan")
    best_step: int = 0
    steps: int = 0
    train_pairs: int = 0
    pairs_per_second: float = 0.0
    train_seconds: float = 0.0
    bf16: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def use_bf16(setting: str) -> bool:
    """Resolve the ``train.bf16`` setting ('auto', 'on', 'off') for this CPU."""
    if setting == "auto":
        return cpu_supports_bf16()
    return setting == "on"


def load_base_model(base_model: str, max_length: int, seed: int) -> Any:
    """Load a CrossEncoder with one output from a local directory; the new head is seeded."""
    from sentence_transformers import CrossEncoder

    from prefrank.artifacts import bundled_retriever_path, resolve_model_dir

    directory = resolve_model_dir(base_model or bundled_retriever_path(), "train.base_model")
    torch.manual_seed(seed)
    return CrossEncoder(str(directory), num_labels=1, max_length=max_length, device="cpu", local_files_only=True)


def _batches(count: int, batch_size: int, seed: int):
    """Yield index arrays of batch_size over endless seeded permutations of range(count)."""
    rng = np.random.default_rng(seed)
    order = np.zeros(0, dtype=np.int64)
    while True:
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(count)])
        yield order[:batch_size]
        order = order[batch_size:]


def dev_accuracy(model: Any, dev: pd.DataFrame, batch_size: int) -> float:
    """Pairwise accuracy of the model's raw logits on the dev pairs."""
    chosen, rejected = score_pairs(dev, reward_scorer(model, batch_size))
    return pairwise_accuracy(chosen, rejected)


def train(model: Any, train_pairs: pd.DataFrame, dev_pairs: pd.DataFrame, config: TrainConfig,
          eval_batch_size: int = 64) -> TrainResult:
    """Train in place and leave the model at its best dev accuracy.

    Args:
        model: A CrossEncoder with one output label.
        train_pairs, dev_pairs: Frames with ``query, chosen, rejected, margin, weight``.
        config: The recipe's [train] settings.
        eval_batch_size: Pairs per forward pass when scoring dev.

    Returns:
        The measured history; with an empty dev split the final weights are kept.
    """
    # Seed and set the thread count, restoring the caller's threads afterwards.
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        return _train(model, train_pairs, dev_pairs, config, eval_batch_size)
    finally:
        torch.set_num_threads(threads)


def _train(model: Any, train_pairs: pd.DataFrame, dev_pairs: pd.DataFrame, config: TrainConfig,
           eval_batch_size: int) -> TrainResult:
    from transformers import get_linear_schedule_with_warmup

    # Set up the loss, optimizer and a linear warm-up/decay schedule.
    loss_fn = BradleyTerryLoss(model, margin_scale=config.margin_scale)
    pairs_per_step = config.batch_size * config.gradient_accumulation
    total_steps = max(1, math.ceil(config.epochs * len(train_pairs) / pairs_per_step))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    bf16 = use_bf16(config.bf16)
    result = TrainResult(steps=total_steps, train_pairs=len(train_pairs), bf16=bf16)
    best_state = None
    queries, chosen, rejected = (train_pairs[c].tolist() for c in ("query", "chosen", "rejected"))
    margins = torch.tensor(train_pairs["margin"].to_numpy(dtype=np.float32))
    weights = torch.tensor(train_pairs["weight"].to_numpy(dtype=np.float32) if config.use_weights
                           else np.ones(len(train_pairs), dtype=np.float32))
    batches = _batches(len(train_pairs), config.batch_size, config.seed)
    logger.info("Training on %d pairs: %d steps of %d pairs, bf16 autocast %s", len(train_pairs), total_steps,
                pairs_per_step, "on" if bf16 else "off")

    # Train, evaluating on dev every eval_steps optimizer steps and at the end.
    progress = tqdm(range(1, total_steps + 1), desc="train", unit="step")
    running_loss, running_correct, seen = 0.0, 0.0, 0
    for step in progress:
        model.train()
        started = time.perf_counter()
        for _ in range(config.gradient_accumulation):
            index = next(batches)
            inputs = [[queries[i] for i in index], [chosen[i] for i in index], [rejected[i] for i in index]]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(inputs, (margins[index], weights[index]))
            (loss / config.gradient_accumulation).backward()
            good, bad = loss_fn.last_rewards
            running_loss += loss.item() * len(index)
            running_correct += float((good > bad).sum())
            seen += len(index)
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        result.train_seconds += time.perf_counter() - started
        progress.set_postfix(loss=f"{running_loss / seen:.4f}", acc=f"{running_correct / seen:.3f}")

        if step == total_steps or (config.eval_steps and step % config.eval_steps == 0):
            entry = {"step": step, "train_loss": running_loss / seen, "train_accuracy": running_correct / seen,
                     "learning_rate": scheduler.get_last_lr()[0]}
            running_loss, running_correct, seen = 0.0, 0.0, 0
            if len(dev_pairs):
                entry["dev_accuracy"] = dev_accuracy(model, dev_pairs, eval_batch_size)
                if not entry["dev_accuracy"] <= result.best_dev_accuracy:
                    result.best_dev_accuracy, result.best_step = entry["dev_accuracy"], step
                    best_state = copy.deepcopy(model.state_dict())
            result.history.append(entry)
            logger.info("step %d/%d: %s", step, total_steps,
                        ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step"))

    # Keep the best dev checkpoint.
    if best_state is not None:
        model.load_state_dict(best_state)
    trained_pairs = total_steps * pairs_per_step
    result.pairs_per_second = trained_pairs / result.train_seconds if result.train_seconds else 0.0
    logger.info("Trained %d pairs in %.1f s (%.1f pairs/s); best dev accuracy %.4f at step %d", trained_pairs,
                result.train_seconds, result.pairs_per_second, result.best_dev_accuracy, result.best_step)
    return result


def make_parser() -> argparse.ArgumentParser:
    from training.recipe import add_override_flags

    parser = argparse.ArgumentParser(prog="python -m training.train_reward", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", required=True, help="recipe name under recipes/ or a path to a .toml file")
    add_override_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare the recipe's data, train, save the artifact, evaluate it on the test split beside baselines."""
    from prefrank.errors import PrefrankError
    from training.evaluate_reward import format_table
    from training.pipeline import evaluate_artifact, load_and_prepare, save_artifact
    from training.recipe import load_recipe, overrides_from_args

    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        recipe = load_recipe(args.recipe, overrides_from_args(args))
        prepared = load_and_prepare(recipe)
        if prepared.pairs["train"].empty:
            print(f"error: recipe {recipe.name!r} produced no training pairs; see the data report above",
                  file=sys.stderr)
            return 2
        model = load_base_model(recipe.train.base_model, recipe.train.max_length, recipe.train.seed)
        result = train(model, prepared.pairs["train"], prepared.pairs["dev"], recipe.train, recipe.eval.batch_size)
        directory = save_artifact(model, recipe, prepared, result)
        results = evaluate_artifact(directory, recipe, prepared)
    except PrefrankError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(f"artifact: {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
