"""Build small model bundles from the bundled MiniLM for the fusion, bundle and reload tests."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

from prefrank.artifacts import bundled_retriever_path
from prefrank.bundles import Bundle, write_bundle
from prefrank.scoring.fusion import Calibrator, FusionModel


def platt_fusion(reward: float = 0.7, retriever: float = 2.5, bias: float = -0.4,
                 slope: float = 1.3, intercept: float = 0.2) -> FusionModel:
    return FusionModel(reward_weight=reward, retriever_weight=retriever, bias=bias,
                       calibrator=Calibrator(method="platt", slope=slope, intercept=intercept))


def isotonic_fusion(reward: float = 0.5, retriever: float = 3.0, bias: float = 0.1) -> FusionModel:
    return FusionModel(
        reward_weight=reward, retriever_weight=retriever, bias=bias,
        calibrator=Calibrator(method="isotonic", thresholds=(-2.0, -0.5, 0.0, 1.0, 3.0),
                              values=(0.02, 0.1, 0.1, 0.6, 0.97)),
    )


def make_bundle(
    models_dir: pathlib.Path,
    version: str,
    reward_dir: pathlib.Path,
    *,
    retriever_dir: pathlib.Path | None = None,
    fusion: FusionModel | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    parents: Sequence[str] = (),
) -> Bundle:
    """Write a bundle whose retriever is a copy of the bundled MiniLM (or retriever_dir)."""
    return write_bundle(
        models_dir, version,
        retriever_dir=retriever_dir or bundled_retriever_path(),
        reward_dir=reward_dir,
        fusion=fusion or platt_fusion(),
        base_models={"retriever": "all-MiniLM-L6-v2", "reward": "all-MiniLM-L6-v2 cross-encoder (seeded head)"},
        data_hashes={"dev": "sha256:test"},
        metrics=metrics if metrics is not None else {"test": {"ndcg@10": 0.5, "ece": 0.05}},
        alpha=0.5,
        parents=parents,
        recipe="test",
    )
