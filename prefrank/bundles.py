"""Versioned model bundles on disk: retriever, reward model, fusion and manifest, and the `current` pointer.

Layout of a models directory::

    <models_dir>/
      current -> 2026-12-04-a          symlink to the served bundle, switched with os.replace
      2026-12-04-a/
        manifest.json                  base models, data hashes, metrics, alpha, fusion weights, parents
        fusion.json                    see prefrank.scoring.fusion
        retriever/                     sentence-transformers bi-encoder
        reward/                        sentence-transformers CrossEncoder with one output

A bundle directory is written under a temporary name and renamed into place, so a reader never
sees half a bundle. Bundles are immutable once written: a new model gets a new version.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import pathlib
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefrank.artifacts import resolve_model_dir
from prefrank.errors import ModelLoadError, PromotionRejectedError
from prefrank.scoring.fusion import FUSION_FILE, FusionModel, header_problem, load_fusion, save_fusion

logger = logging.getLogger(__name__)

CURRENT = "current"
MANIFEST_FILE = "manifest.json"
RETRIEVER_DIR = "retriever"
REWARD_DIR = "reward"
MANIFEST_FORMAT = 1
# The metrics split that promotion compares.
PROMOTION_SPLIT = "test"
# Metrics where a lower value is better; every other metric is higher-is-better.
LOWER_IS_BETTER_PREFIXES = ("ece", "latency", "loss")

_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MANIFEST_KEYS = {"format", "version", "created", "base_models", "data_hashes", "metrics", "alpha",
                  "fusion", "parents", "recipe"}


class BundleError(ModelLoadError):
    """A model bundle is missing, incomplete or has an invalid manifest."""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The description of a bundle: its models, data, metrics and lineage.

    Attributes:
        version: The bundle's name; equals its directory name.
        created: ISO 8601 UTC time the bundle was written.
        base_models: Role ("retriever", "reward") to the base model each started from.
        data_hashes: Dataset or split name to a content hash of the data it was trained or fit on.
        metrics: Split name ("dev", "test", ...) to metric name to value, e.g. ``{"test": {"ndcg@10": 0.71}}``.
        alpha: Merging weight of the distilled retriever, or None when it was not merged.
        fusion: Copy of the fusion weights from fusion.json, for reading without loading it.
        parents: Versions this bundle was derived from, oldest first.
        recipe: Name of the training recipe, or empty.
    """

    version: str
    created: str
    base_models: Mapping[str, str] = field(default_factory=dict)
    data_hashes: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    alpha: float | None = None
    fusion: Mapping[str, Any] = field(default_factory=dict)
    parents: Sequence[str] = ()
    recipe: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT, "version": self.version, "created": self.created,
            "base_models": dict(self.base_models), "data_hashes": dict(self.data_hashes),
            "metrics": {split: dict(values) for split, values in self.metrics.items()},
            "alpha": self.alpha, "fusion": dict(self.fusion), "parents": list(self.parents), "recipe": self.recipe,
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> Manifest:
        """Validate parsed manifest JSON.

        Raises:
            BundleError: a key is missing, unknown or of the wrong type, naming ``source``.
        """
        def fail(problem: str) -> BundleError:
            return BundleError(f"{source}: {problem}")

        problem = header_problem(data, _MANIFEST_KEYS, MANIFEST_FORMAT)
        if problem:
            raise fail(problem)
        for key in ("version", "created"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise fail(f"{key} must be a non-empty string, got {data.get(key)!r}")
        for key in ("base_models", "data_hashes"):
            value = data.get(key, {})
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise fail(f"{key} must be an object of strings, got {value!r}")
        metrics = data.get("metrics", {})
        if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
            raise fail("metrics must be an object of splits, each an object of metric values, "
                       'e.g. {"test": {"ndcg@10": 0.7}}')
        for split, values in metrics.items():
            for name, value in values.items():
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise fail(f"metrics.{split}.{name} must be a finite number, got {value!r}")
        alpha = data.get("alpha")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float)
                                  or not 0.0 <= alpha <= 1.0):
            raise fail(f"alpha must be null or a number in [0, 1], got {alpha!r}")
        parents = data.get("parents", [])
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise fail(f"parents must be a list of bundle versions, got {parents!r}")
        fusion = data.get("fusion", {})
        if not isinstance(fusion, dict):
            raise fail(f"fusion must be an object, got {type(fusion).__name__}")
        recipe = data.get("recipe", "")
        if not isinstance(recipe, str):
            raise fail(f"recipe must be a string, got {recipe!r}")
        return cls(
            version=data["version"], created=data["created"], base_models=data.get("base_models", {}),
            data_hashes=data.get("data_hashes", {}), metrics=metrics,
            alpha=None if alpha is None else float(alpha), fusion=fusion, parents=tuple(parents), recipe=recipe,
        )


@dataclass(frozen=True)
class Bundle:
    """A validated bundle directory."""

    directory: pathlib.Path
    manifest: Manifest
    fusion: FusionModel

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def retriever_dir(self) -> pathlib.Path:
        return self.directory / RETRIEVER_DIR

    @property
    def reward_dir(self) -> pathlib.Path:
        return self.directory / REWARD_DIR


def check_version_name(version: str) -> None:
    """Raise BundleError unless version is usable as a bundle directory name."""
    if version == CURRENT or not _VERSION_PATTERN.match(version):
        raise BundleError(
            f"bundle version {version!r} is invalid; use 1-128 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit, and not {CURRENT!r}"
        )


def read_bundle(directory: str | pathlib.Path) -> Bundle:
    """Read and validate one bundle directory: manifest, fusion parameters and both model directories.

    Raises:
        BundleError: the directory, its manifest or a model directory is missing or invalid.
        FusionFormatError: fusion.json is missing or invalid.
    """
    directory = pathlib.Path(directory).expanduser().resolve()
    if not directory.is_dir():
        raise BundleError(f"model bundle {directory} does not exist")
    manifest_path = directory / MANIFEST_FILE
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise BundleError(f"{manifest_path} not found; a model bundle needs a {MANIFEST_FILE}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path} is not a readable JSON file: {err}") from err
    manifest = Manifest.from_json(data, source=str(manifest_path))
    if manifest.version != directory.name:
        raise BundleError(
            f"{manifest_path}: version {manifest.version!r} differs from the directory name {directory.name!r}; "
            "a bundle's directory must be named after its version"
        )
    fusion = load_fusion(directory / FUSION_FILE)
    for role, setting in ((RETRIEVER_DIR, "bundle retriever"), (REWARD_DIR, "bundle reward model")):
        try:
            resolve_model_dir(directory / role, f"{setting} ({manifest.version})")
        except ModelLoadError as err:
            raise BundleError(err.message) from err
    return Bundle(directory, manifest, fusion)


def list_versions(models_dir: str | pathlib.Path) -> list[str]:
    """Return the names of the bundle directories (those with a manifest), sorted; the pointer is skipped."""
    root = pathlib.Path(models_dir).expanduser()
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if p.name != CURRENT and not p.name.startswith(".") and p.is_dir() and (p / MANIFEST_FILE).is_file()
    )


def current_version(models_dir: str | pathlib.Path) -> str | None:
    """Return the version that ``current`` points to, or None when there is no pointer."""
    pointer = pathlib.Path(models_dir).expanduser() / CURRENT
    if not pointer.is_symlink():
        if pointer.exists():
            raise BundleError(f"{pointer} must be a symbolic link to a bundle directory, found a regular entry")
        return None
    return pathlib.Path(os.readlink(pointer)).name


def current_bundle(models_dir: str | pathlib.Path) -> Bundle | None:
    """Read the bundle ``current`` points to; None when models_dir has no ``current``.

    Raises:
        BundleError: the pointer exists but its bundle is missing or invalid.
    """
    version = current_version(models_dir)
    if version is None:
        return None
    return read_bundle(pathlib.Path(models_dir).expanduser() / version)


def set_current(models_dir: str | pathlib.Path, version: str) -> Bundle:
    """Point ``current`` at a bundle after validating it; readers see the old or the new target, never none.

    A relative symlink is created under a temporary name and renamed over ``current``; rename
    replaces the old link atomically on POSIX file systems.

    Raises:
        BundleError: the bundle is missing or invalid; ``current`` is left unchanged.
    """
    root = pathlib.Path(models_dir).expanduser()
    check_version_name(version)
    bundle = read_bundle(root / version)
    temporary = root / f".{CURRENT}.tmp-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    os.symlink(version, temporary)
    os.replace(temporary, root / CURRENT)
    logger.info("Pointed %s at bundle %s", root / CURRENT, version)
    return bundle


def write_bundle(
    models_dir: str | pathlib.Path,
    version: str,
    *,
    retriever_dir: str | pathlib.Path,
    reward_dir: str | pathlib.Path,
    fusion: FusionModel,
    base_models: Mapping[str, str] | None = None,
    data_hashes: Mapping[str, str] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    alpha: float | None = None,
    parents: Sequence[str] = (),
    recipe: str = "",
) -> Bundle:
    """Copy two model directories and write fusion.json and manifest.json into a new bundle.

    The bundle is assembled under a hidden temporary name and renamed into place, then read back
    and validated. ``current`` is not changed; use ``promote`` or ``set_current``.

    Raises:
        BundleError: the version name is invalid or already exists.
    """
    root = pathlib.Path(models_dir).expanduser()
    check_version_name(version)
    target = root / version
    if target.exists():
        raise BundleError(f"bundle {target} already exists; bundles are immutable, write a new version")
    staging = root / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copytree(retriever_dir, staging / RETRIEVER_DIR)
        shutil.copytree(reward_dir, staging / REWARD_DIR)
        save_fusion(fusion, staging / FUSION_FILE)
        weights = fusion.to_json()
        manifest = Manifest(
            version=version,
            created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            base_models=base_models or {}, data_hashes=data_hashes or {}, metrics=metrics or {}, alpha=alpha,
            fusion={"weights": weights["weights"], "bias": weights["bias"], "calibration": weights["calibration"]},
            parents=tuple(parents), recipe=recipe,
        )
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Wrote bundle %s", target)
    return read_bundle(target)


def metric_regressions(
    candidate: Mapping[str, float], current: Mapping[str, float], tolerance: float
) -> list[str]:
    """Describe each metric on which candidate is worse than current by more than tolerance.

    Metric names starting with one of LOWER_IS_BETTER_PREFIXES are better when lower; all others
    when higher. A metric that current has and candidate lacks counts as a regression, since it
    cannot be compared.
    """
    problems = []
    for name in sorted(current):
        if name not in candidate:
            problems.append(f"{name}: missing in the candidate (current {current[name]:.4f})")
            continue
        lower_is_better = name.lower().startswith(LOWER_IS_BETTER_PREFIXES)
        loss = candidate[name] - current[name] if lower_is_better else current[name] - candidate[name]
        if loss > tolerance:
            direction = "lower" if lower_is_better else "higher"
            problems.append(
                f"{name}: candidate {candidate[name]:.4f} vs current {current[name]:.4f} "
                f"({direction} is better, worse by {loss:.4f} > tolerance {tolerance:.4f})"
            )
    return problems


def promote(models_dir: str | pathlib.Path, candidate: str, tolerance: float = 0.0) -> Bundle:
    """Point ``current`` at candidate unless its test metrics are worse than current's beyond tolerance.

    Args:
        models_dir: The models directory.
        candidate: Version of the bundle to promote.
        tolerance: Largest allowed loss per metric, in the metric's own units (absolute).

    Raises:
        PromotionRejectedError: a test metric regressed beyond tolerance; the message lists each one.
        BundleError: the candidate (or the current bundle) is missing or invalid.
    """
    if tolerance < 0 or not math.isfinite(tolerance):
        raise PromotionRejectedError(f"tolerance must be a finite number >= 0, got {tolerance}")
    root = pathlib.Path(models_dir).expanduser()
    check_version_name(candidate)
    proposed = read_bundle(root / candidate)
    serving = current_bundle(root)
    if serving is not None and serving.version != candidate:
        problems = metric_regressions(
            proposed.manifest.metrics.get(PROMOTION_SPLIT, {}),
            serving.manifest.metrics.get(PROMOTION_SPLIT, {}),
            tolerance,
        )
        if problems:
            raise PromotionRejectedError(
                f"bundle {candidate} is worse than current bundle {serving.version} on the "
                f"{PROMOTION_SPLIT} metrics: " + "; ".join(problems)
                + "; current is unchanged. Improve the candidate or raise the tolerance"
            )
    set_current(root, candidate)
    return proposed
