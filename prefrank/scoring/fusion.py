"""Score fusion and calibration: the linear model over reward and retriever scores in ``fusion.json``.

The fused score is f = w_r * r + w_s * s + w_f * first_stage + b, where r is the reward model's
logit, s the retriever cosine and first_stage the caller's first-stage score. A calibrator maps
f to a relevance in [0, 1]: Platt scaling, sigmoid(a * f + c) with a > 0, or isotonic
regression stored as fitted thresholds and applied by linear interpolation. Both are
non-decreasing in f, so ordering by relevance never contradicts ordering by f.

The offline pipeline fits the parameters. This module only validates, loads, saves and applies
them, with numpy alone, so the service and the batch scorer compute identical numbers.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefrank.errors import ModelLoadError

FUSION_FILE = "fusion.json"
FORMAT_VERSION = 1
CALIBRATION_METHODS = ("platt", "isotonic")

_TOP_LEVEL_KEYS = {"format", "weights", "bias", "calibration", "metadata"}
_WEIGHT_KEYS = {"reward", "retriever", "first_stage"}


class FusionFormatError(ModelLoadError):
    """A fusion.json file is missing, does not parse or contains invalid parameters."""


@dataclass(frozen=True, kw_only=True)
class Calibrator:
    """Maps fused scores to relevance in [0, 1], non-decreasing.

    Attributes:
        method: "platt" or "isotonic".
        slope: Platt ``a`` in sigmoid(a * f + c); must be > 0.
        intercept: Platt ``c``.
        thresholds: Isotonic fused-score knots, strictly increasing.
        values: Isotonic relevance at each knot, non-decreasing, within [0, 1]. Scores below the
            first knot or above the last get the first or last value.
    """

    method: str
    slope: float = 1.0
    intercept: float = 0.0
    thresholds: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise FusionFormatError(
                f"calibration.method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}"
            )
        if self.method == "platt":
            _require_finite("calibration.a", self.slope)
            _require_finite("calibration.c", self.intercept)
            if self.slope <= 0:
                raise FusionFormatError(
                    f"calibration.a must be > 0 so that relevance rises with the fused score, got {self.slope}"
                )
            return
        if len(self.thresholds) < 2 or len(self.thresholds) != len(self.values):
            raise FusionFormatError(
                "isotonic calibration needs 'x' and 'y' lists of the same length, at least 2; "
                f"got {len(self.thresholds)} x and {len(self.values)} y"
            )
        for name, series in (("x", self.thresholds), ("y", self.values)):
            for position, value in enumerate(series):
                _require_finite(f"calibration.{name}[{position}]", value)
        if any(b <= a for a, b in zip(self.thresholds, self.thresholds[1:], strict=False)):
            raise FusionFormatError("calibration.x must be strictly increasing")
        if any(b < a for a, b in zip(self.values, self.values[1:], strict=False)):
            raise FusionFormatError("calibration.y must be non-decreasing, or relevance would fall as scores rise")
        if self.values[0] < 0 or self.values[-1] > 1:
            raise FusionFormatError(
                f"calibration.y must lie within [0, 1], got {self.values[0]} .. {self.values[-1]}"
            )

    def apply(self, fused: np.ndarray) -> np.ndarray:
        """Return the calibrated relevance of each fused score, as float64 in [0, 1]."""
        fused = np.asarray(fused, dtype=np.float64)
        if self.method == "platt":
            # exp of a large positive argument overflows to inf and gives 0 without a warning
            # under errstate; the clip keeps rounding from leaving [0, 1].
            with np.errstate(over="ignore"):
                relevance = 1.0 / (1.0 + np.exp(-(self.slope * fused + self.intercept)))
            return np.clip(relevance, 0.0, 1.0)
        return np.interp(fused, np.asarray(self.thresholds), np.asarray(self.values))

    def to_json(self) -> dict[str, Any]:
        if self.method == "platt":
            return {"method": "platt", "a": self.slope, "c": self.intercept}
        return {"method": "isotonic", "x": list(self.thresholds), "y": list(self.values)}


@dataclass(frozen=True, kw_only=True)
class FusionModel:
    """The fused score f = w_r * r + w_s * s + w_f * first_stage + b and its calibrator.

    Attributes:
        reward_weight: w_r, applied to the reward model's logit.
        retriever_weight: w_s, applied to the retriever cosine.
        first_stage_weight: w_f, applied to the caller's first-stage score. The term is left out
            for a request whose candidates carry no first-stage score (Search never has one).
        bias: b.
        calibrator: The map from f to relevance.
        metadata: Free-form facts about the fit (data, method, ECE); stored, never applied.
    """

    reward_weight: float
    retriever_weight: float
    first_stage_weight: float = 0.0
    bias: float = 0.0
    calibrator: Calibrator
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("weights.reward", self.reward_weight), ("weights.retriever", self.retriever_weight),
                            ("weights.first_stage", self.first_stage_weight), ("bias", self.bias)):
            _require_finite(name, value)

    @property
    def needs_reward(self) -> bool:
        return self.reward_weight != 0.0

    @property
    def needs_retriever(self) -> bool:
        return self.retriever_weight != 0.0

    @property
    def needs_first_stage(self) -> bool:
        return self.first_stage_weight != 0.0

    def fuse(
        self, reward: np.ndarray | None, retriever: np.ndarray | None, first_stage: np.ndarray | None = None
    ) -> np.ndarray:
        """Return the fused scores f of n candidates.

        Args:
            reward: Reward logits, shape (n,); may be None only when the reward weight is 0.
            retriever: Retriever cosines, shape (n,); may be None only when the retriever weight is 0.
            first_stage: First-stage scores, shape (n,), or None to leave the term out.

        Raises:
            ValueError: a component the weights need is missing.
        """
        terms = [(reward, self.reward_weight, "reward"), (retriever, self.retriever_weight, "retriever")]
        if first_stage is not None:
            terms.append((first_stage, self.first_stage_weight, "first_stage"))
        total: np.ndarray | None = None
        for values, weight, name in terms:
            if weight == 0.0:
                continue
            if values is None:
                raise ValueError(f"fusion weight {name}={weight} needs {name} scores, but none were given")
            term = weight * np.asarray(values, dtype=np.float64)
            total = term if total is None else total + term
        if total is None:
            size = next((len(v) for v, _, _ in terms if v is not None), 0)
            total = np.zeros(size, dtype=np.float64)
        return total + self.bias

    def relevance(self, fused: np.ndarray) -> np.ndarray:
        """Return the calibrated relevance in [0, 1] of fused scores."""
        return self.calibrator.apply(fused)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "weights": {"reward": self.reward_weight, "retriever": self.retriever_weight,
                        "first_stage": self.first_stage_weight},
            "bias": self.bias,
            "calibration": self.calibrator.to_json(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_json(cls, data: Any, source: str = FUSION_FILE) -> FusionModel:
        """Build a FusionModel from parsed JSON, naming the source in every error.

        Raises:
            FusionFormatError: a key is missing or unknown, or its value is invalid.
        """
        try:
            return _parse(data)
        except FusionFormatError as err:
            raise FusionFormatError(f"{source}: {err.message}") from err


def header_problem(data: Any, allowed_keys: set[str], format_version: int) -> str | None:
    """Describe what is wrong with a versioned JSON object's shape, keys and format, or return None."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    unknown = sorted(set(data) - allowed_keys)
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed_keys))}"
    if data.get("format") != format_version:
        return f"format must be {format_version}, got {data.get('format')!r}"
    return None


def _parse(data: Any) -> FusionModel:
    problem = header_problem(data, _TOP_LEVEL_KEYS, FORMAT_VERSION)
    if problem:
        raise FusionFormatError(problem)
    weights = data.get("weights")
    if not isinstance(weights, dict) or not {"reward", "retriever"} <= set(weights):
        raise FusionFormatError("weights must be an object with 'reward' and 'retriever' (and optional 'first_stage')")
    unknown = sorted(set(weights) - _WEIGHT_KEYS)
    if unknown:
        raise FusionFormatError(f"unknown weight(s) {', '.join(unknown)}; expected reward, retriever, first_stage")
    calibration = data.get("calibration")
    if not isinstance(calibration, dict) or "method" not in calibration:
        raise FusionFormatError("calibration must be an object with a 'method' ('platt' or 'isotonic')")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise FusionFormatError(f"metadata must be an object, got {type(metadata).__name__}")

    method = calibration["method"]
    if method == "platt":
        expected = {"method", "a", "c"}
    elif method == "isotonic":
        expected = {"method", "x", "y"}
    else:
        raise FusionFormatError(
            f"calibration.method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}"
        )
    if set(calibration) != expected:
        raise FusionFormatError(
            f"{method} calibration needs exactly the keys {', '.join(sorted(expected))}, "
            f"got {', '.join(sorted(calibration))}"
        )
    if method == "platt":
        calibrator = Calibrator(method="platt", slope=_number("calibration.a", calibration["a"]),
                                intercept=_number("calibration.c", calibration["c"]))
    else:
        calibrator = Calibrator(method="isotonic", thresholds=_numbers("calibration.x", calibration["x"]),
                                values=_numbers("calibration.y", calibration["y"]))
    return FusionModel(
        reward_weight=_number("weights.reward", weights["reward"]),
        retriever_weight=_number("weights.retriever", weights["retriever"]),
        first_stage_weight=_number("weights.first_stage", weights.get("first_stage", 0.0)),
        bias=_number("bias", data.get("bias", 0.0)),
        calibrator=calibrator,
        metadata=metadata,
    )


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FusionFormatError(f"{name} must be a number, got {value!r}")
    _require_finite(name, value)
    return float(value)


def _numbers(name: str, values: Any) -> tuple[float, ...]:
    if not isinstance(values, list):
        raise FusionFormatError(f"{name} must be a list of numbers, got {type(values).__name__}")
    return tuple(_number(f"{name}[{i}]", v) for i, v in enumerate(values))


def _require_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise FusionFormatError(f"{name} must be finite, got {value}")


def load_fusion(path: str | pathlib.Path) -> FusionModel:
    """Read and validate a fusion.json file.

    Raises:
        FusionFormatError: the file is missing, is not JSON, or contains invalid parameters.
    """
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FusionFormatError(f"{path} not found; a model bundle needs a {FUSION_FILE}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FusionFormatError(f"{path} is not a readable JSON file: {err}") from err
    return FusionModel.from_json(data, source=str(path))


def save_fusion(fusion: FusionModel, path: str | pathlib.Path) -> None:
    """Write fusion.json atomically: a temporary file in the same directory, then os.replace."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(fusion.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
