"""Recipes: one TOML file per domain naming the data source, preparation, training and evaluation settings.

A recipe has a top-level ``name`` and ``description`` and five tables, ``[source]`` (``kind`` plus
that loader's options, see ``training.sources``), ``[prepare]``, ``[train]``, ``[eval]`` and ``[fuse]`` whose
keys are the fields of the dataclasses below. Unknown keys are rejected. Command-line flags
(``--epochs 1 --max-pairs 2000``) override the file, so a quick run needs no edit.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any

from prefrank.errors import ConfigError

RECIPES_DIR = pathlib.Path(__file__).resolve().parent.parent / "recipes"


def _setting(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses.field metadata
    return field(default=default, metadata={"help": help})


def _require_bound(config: Any, section: str, names: tuple[str, ...], *, positive: bool) -> None:
    """Raise ConfigError naming the first setting that is not > 0 (positive) or not >= 0."""
    for name in names:
        value = getattr(config, name)
        if value <= 0 if positive else value < 0:
            raise ConfigError(f"{section}.{name} must be {'>' if positive else '>='} 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """The loader that reads the data, and its options (paths relative to PREFRANK_DATA_DIR)."""

    kind: str = _setting("pairs", "loader name: pairs, graded, hh-rlhf, mqm, scifact, qbqtc, wmt-da, goodbooks")
    options: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": "loader keyword options, e.g. path and column names"})


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """Cleaning, pair construction and the split by query group."""

    max_query_chars: int = _setting(4000, "drop rows whose query is longer (characters, after normalisation)")
    max_candidate_chars: int = _setting(4000, "drop rows whose candidate is longer (characters)")
    min_score_gap: float = _setting(0.0, "graded lists: pair two candidates only when their score gap exceeds this")
    contradictions: str = _setting("majority", "a > b and b > a for one query: 'majority' vote or 'drop' both")
    max_pairs_per_group: int = _setting(0, "most pairs kept per query group, sampled with split_seed (0 = all)")
    dev_fraction: float = _setting(0.1, "share of query groups in the dev split")
    test_fraction: float = _setting(0.2, "share of query groups in the test split")
    split_seed: str = _setting("prefrank", "salt of the group hash that assigns splits; change it to re-draw")
    max_pairs: int = _setting(0, "most training pairs kept, sampled with split_seed (0 = all)")
    max_dev_pairs: int = _setting(0, "most dev pairs kept, sampled with split_seed (0 = all)")
    max_test_pairs: int = _setting(0, "most test pairs kept, sampled with split_seed (0 = all)")
    unk_warn_rate: float = _setting(0.02, "warn when the tokenizer maps more than this share of tokens to [UNK]")

    def __post_init__(self) -> None:
        if self.contradictions not in ("majority", "drop"):
            raise ConfigError(f"prepare.contradictions must be 'majority' or 'drop', got {self.contradictions!r}")
        if not (0 <= self.dev_fraction < 1 and 0 < self.test_fraction < 1 and
                self.dev_fraction + self.test_fraction < 1):
            raise ConfigError(
                f"prepare.dev_fraction ({self.dev_fraction}) and test_fraction ({self.test_fraction}) must be in "
                "[0, 1) and (0, 1) with a sum below 1, so training keeps some groups"
            )
        _require_bound(self, "prepare", ("max_query_chars", "max_candidate_chars"), positive=True)
        _require_bound(self, "prepare", ("max_pairs_per_group", "max_pairs", "max_dev_pairs", "max_test_pairs",
                                         "min_score_gap"), positive=False)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Cross-encoder reward-model training with the Bradley-Terry loss."""

    base_model: str = _setting("", "local model directory to start from; empty uses the bundled all-MiniLM-L6-v2")
    output_dir: str = _setting("artifacts/reward", "artifacts go to <output_dir>/<recipe>/<version>/")
    epochs: float = _setting(1.0, "passes over the training pairs (fractions allowed)")
    batch_size: int = _setting(16, "pairs per optimizer micro-batch (each pair is two forward rows)")
    gradient_accumulation: int = _setting(1, "micro-batches per optimizer step")
    learning_rate: float = _setting(3e-5, "AdamW peak learning rate")
    weight_decay: float = _setting(0.01, "AdamW weight decay")
    warmup_ratio: float = _setting(0.1, "share of optimizer steps with linear warm-up, then linear decay to 0")
    max_grad_norm: float = _setting(1.0, "gradient clipping norm (0 disables)")
    max_length: int = _setting(256, "tokens per (query, candidate) input; longer inputs are truncated")
    margin_scale: float = _setting(0.0, "loss margin = margin_scale * judgement margin; 0 disables the margin")
    use_weights: bool = _setting(True, "multiply each pair's loss by its weight column")
    eval_steps: int = _setting(100, "optimizer steps between dev evaluations (0 = only at the end)")
    seed: int = _setting(13, "seed of torch, the head initialisation and the batch order")
    bf16: str = _setting("auto", "bf16 autocast: 'auto' (on when the CPU has avx512_bf16 or AMX), 'on' or 'off'")
    torch_threads: int = _setting(0, "torch intra-op threads; 0 keeps torch's default")

    def __post_init__(self) -> None:
        if self.bf16 not in ("auto", "on", "off"):
            raise ConfigError(f"train.bf16 must be 'auto', 'on' or 'off', got {self.bf16!r}")
        _require_bound(self, "train", ("epochs", "batch_size", "gradient_accumulation", "learning_rate",
                                       "max_length"), positive=True)
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _require_bound(self, "train", ("eval_steps", "margin_scale", "max_grad_norm", "torch_threads",
                                       "weight_decay"), positive=False)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Test-split evaluation and baselines."""

    margin_buckets: tuple[float, ...] = _setting((), "upper edges of margin buckets for accuracy; empty = tertiles")
    kendall: bool = _setting(False, "report per-group Kendall tau against the human scores (graded sources)")
    kendall_max_groups: int = _setting(0, "score only the first N test groups for Kendall tau (0 = all)")
    batch_size: int = _setting(64, "pairs per forward pass when scoring")

    def __post_init__(self) -> None:
        object.__setattr__(self, "margin_buckets", tuple(float(edge) for edge in self.margin_buckets))
        if self.kendall_max_groups < 0:
            raise ConfigError(f"eval.kendall_max_groups must be >= 0, got {self.kendall_max_groups}")
        if list(self.margin_buckets) != sorted(set(self.margin_buckets)):
            raise ConfigError(f"eval.margin_buckets must be strictly increasing, got {list(self.margin_buckets)}")


@dataclass(frozen=True, kw_only=True)
class FuseConfig:
    """Distillation, merging, fusion fitting, bundle evaluation and promotion (``make retrain``)."""

    work_dir: str = _setting("artifacts/fuse", "intermediate models go to <work_dir>/<recipe>/")
    models_dir: str = _setting("models", "bundles go to <models_dir>/<recipe>/; serve that with PREFRANK_MODELS_DIR")
    reports_dir: str = _setting("reports", "evaluation reports go to <reports_dir>/<bundle>/")
    distill_max_pairs: int = _setting(800, "maximum training pairs used for distillation (0 = all)")
    distill_epochs: float = _setting(1.0, "passes over the distillation pairs")
    distill_batch_size: int = _setting(16, "triplets per training batch")
    distill_learning_rate: float = _setting(2e-5, "AdamW peak learning rate of the bi-encoder")
    distill_max_length: int = _setting(256, "tokens per text when distilling; longer texts are truncated")
    hard_negatives: str = _setting("rejected", "'rejected' uses each pair's rejected text; 'mined' mines the corpus")
    mined_range_min: int = _setting(10, "mined negatives skip this many top ranks, where unlabelled positives sit")
    mined_min_reward_gap: float = _setting(0.0, "keep a mined negative only when the reward model scores it more "
                                           "than this (in logits) below the positive")
    alphas: tuple[float, ...] = _setting((0.0, 0.25, 0.5, 0.75, 1.0), "merging weights of the distilled retriever")
    merge_metric: str = _setting("ndcg@10", "dev metric that picks alpha: recall@100, ndcg@10, mrr@10 or accuracy")
    gain_thresholds: tuple[float, ...] = _setting((1.0,), "graded score edges of gains 1, 2, ...; "
                                                  "scores at or above the last edge count as relevant")
    rerank_depth: int = _setting(30, "retrieved candidates the reward model reranks in search evaluation")
    max_queries: int = _setting(0, "maximum dev and test graded-list groups used (0 = all); for quick runs")
    max_corpus_docs: int = _setting(0, "search: documents in the evaluation corpus, every judged one included "
                                    "(0 = the whole corpus)")
    safety_recipe: str = _setting("safety-hh-harmless", "recipe whose test pairs form the safety slice; empty skips")
    safety_pairs: int = _setting(200, "pairs in the safety slice")
    speed_runs: int = _setting(5, "timed runs of 100 candidates per configuration; the median is reported")
    promote_tolerance: float = _setting(0.01, "maximum allowed drop per test metric when promoting (absolute)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        object.__setattr__(self, "gain_thresholds", tuple(float(g) for g in self.gain_thresholds))
        if self.hard_negatives not in ("rejected", "mined"):
            raise ConfigError(f"fuse.hard_negatives must be 'rejected' or 'mined', got {self.hard_negatives!r}")
        if self.merge_metric not in ("recall@100", "ndcg@10", "mrr@10", "accuracy"):
            raise ConfigError("fuse.merge_metric must be recall@100, ndcg@10, mrr@10 or accuracy, "
                              f"got {self.merge_metric!r}")
        if not self.alphas or any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ConfigError(f"fuse.alphas must be a non-empty list of numbers in [0, 1], got {list(self.alphas)}")
        if not self.gain_thresholds or list(self.gain_thresholds) != sorted(set(self.gain_thresholds)):
            raise ConfigError("fuse.gain_thresholds must be a non-empty, strictly increasing list, "
                              f"got {list(self.gain_thresholds)}")
        _require_bound(self, "fuse", ("distill_epochs", "distill_batch_size", "distill_learning_rate",
                                      "distill_max_length", "rerank_depth", "speed_runs"), positive=True)
        _require_bound(self, "fuse", ("distill_max_pairs", "mined_range_min", "max_queries", "max_corpus_docs",
                                      "safety_pairs", "promote_tolerance"), positive=False)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A whole recipe: where the data is and how to prepare, train and evaluate."""

    name: str = _setting("custom", "recipe name; also the artifact sub-directory")
    description: str = _setting("", "one line on what the recipe trains")
    path: str = _setting("", "the TOML file the recipe was read from; empty for a recipe built in code")
    source: SourceConfig = _setting(None, "the [source] table")
    prepare: PrepareConfig = _setting(None, "the [prepare] table")
    train: TrainConfig = _setting(None, "the [train] table")
    eval: EvalConfig = _setting(None, "the [eval] table")
    fuse: FuseConfig = _setting(None, "the [fuse] table")

    def __post_init__(self) -> None:
        defaults = {"source": SourceConfig(), "prepare": PrepareConfig(), "train": TrainConfig(),
                    "eval": EvalConfig(), "fuse": FuseConfig()}
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"prepare": PrepareConfig, "train": TrainConfig, "eval": EvalConfig, "fuse": FuseConfig}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    return cls(**values)


def recipe_path(name_or_path: str) -> pathlib.Path:
    """Resolve a recipe name (``recipes/<name>.toml``) or a path to a TOML file.

    Raises:
        ConfigError: no such recipe.
    """
    path = pathlib.Path(name_or_path)
    if path.suffix != ".toml":
        path = RECIPES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))
        raise ConfigError(f"recipe {name_or_path!r} not found at {path}; known recipes: {', '.join(known)}")
    return path


def load_recipe(name_or_path: str, overrides: dict[str, dict[str, Any]] | None = None) -> Recipe:
    """Read a recipe file and apply per-section overrides, e.g. ``{"train": {"epochs": 1}}``.

    Raises:
        ConfigError: the file does not parse, a key is unknown or a value is invalid.
    """
    path = recipe_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    unknown = sorted(set(data) - {"name", "description", "source", *_SECTIONS})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}")
    source = dict(data.get("source", {}))
    sections = {name: {**data.get(name, {}), **(overrides or {}).get(name, {})} for name in _SECTIONS}
    return Recipe(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        path=str(path.resolve()),
        source=SourceConfig(kind=source.pop("kind", "pairs"), options=source),
        **{name: _build(cls, sections[name], f"{path} [{name}]") for name, cls in _SECTIONS.items()},
    )


def recipe_from_dict(data: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None) -> Recipe:
    """Rebuild a recipe from ``Recipe.to_dict()`` output (as stored in a manifest), then apply overrides.

    Raises:
        ConfigError: a key is unknown or a value is invalid.
    """
    sections = {name: {**data.get(name, {}), **(overrides or {}).get(name, {})} for name in _SECTIONS}
    source = data.get("source", {})
    return Recipe(
        name=data.get("name", "custom"),
        description=data.get("description", ""),
        path=data.get("path", ""),
        source=SourceConfig(kind=source.get("kind", "pairs"), options=dict(source.get("options", {}))),
        **{name: _build(cls, sections[name], f"manifest recipe [{name}]") for name, cls in _SECTIONS.items()},
    )


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per [prepare]/[train]/[fuse] field (``--max-pairs``); defaults come from the recipe."""
    for section in ("prepare", "train", "fuse"):
        cls = _SECTIONS[section]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if typing.get_origin(kind) is tuple:
                parse, metavar = _parse_floats, "FLOAT,..."
            else:
                parse, metavar = (_parse_bool if kind is bool else kind), kind.__name__.upper()
            parser.add_argument(
                "--" + f.name.replace("_", "-"), dest=f"{section}.{f.name}", default=None,
                type=parse, metavar=metavar,
                help=f"[{section}] {f.metadata['help']} (built-in default {_shown(f.default)}; "
                     "the recipe file may set another)",
            )


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered not in ("1", "0", "true", "false", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {raw!r}")
    return lowered in ("1", "true", "yes")


def _shown(default: Any) -> str:
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default) or "none"
    return repr(default)


def _parse_floats(raw: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {raw!r}") from err


def overrides_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Collect the flags that were given into ``{"train": {...}, "prepare": {...}}``."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            overrides.setdefault(section, {})[name] = value
    return overrides
