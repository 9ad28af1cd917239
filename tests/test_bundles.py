"""Model bundles on disk: writing, validation, the `current` pointer, promotion and model resolution."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
from bundle_helpers import isotonic_fusion, platt_fusion
from conftest import make_config

from prefrank.bundles import (
    BundleError,
    current_bundle,
    current_version,
    list_versions,
    metric_regressions,
    promote,
    read_bundle,
    set_current,
    write_bundle,
)
from prefrank.errors import PromotionRejectedError
from prefrank.reloading import resolve_models
from prefrank.scoring.fusion import FusionFormatError


@pytest.fixture
def fake_models(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Two directories shaped like Hugging Face models; enough for bundle checks that load no weights."""
    pair = []
    for name in ("retriever-src", "reward-src"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text("{}")
        (directory / "model.safetensors").write_bytes(name.encode())
        pair.append(directory)
    return pair[0], pair[1]


def _write(models_dir: pathlib.Path, version: str, fake_models, metrics=None, fusion=None):
    return write_bundle(
        models_dir, version, retriever_dir=fake_models[0], reward_dir=fake_models[1],
        fusion=fusion or platt_fusion(), metrics=metrics if metrics is not None else {"test": {"ndcg@10": 0.6}},
        alpha=0.25, parents=("base",), base_models={"retriever": "all-MiniLM-L6-v2"},
        data_hashes={"train": "sha256:abc"}, recipe="search-test",
    )


def test_write_bundle_round_trip(tmp_path: pathlib.Path, fake_models) -> None:
    written = _write(tmp_path / "models", "v1", fake_models, fusion=isotonic_fusion())

    bundle = read_bundle(tmp_path / "models" / "v1")

    assert bundle == written
    assert bundle.fusion == isotonic_fusion()
    manifest = bundle.manifest
    assert (manifest.version, manifest.alpha, tuple(manifest.parents), manifest.recipe) == ("v1", 0.25, ("base",),
                                                                                             "search-test")
    assert manifest.metrics == {"test": {"ndcg@10": 0.6}}
    assert manifest.fusion["weights"] == {"reward": 0.5, "retriever": 3.0, "first_stage": 0.0}
    assert manifest.created.endswith("Z")
    assert (bundle.retriever_dir / "model.safetensors").read_bytes() == b"retriever-src"
    assert (bundle.reward_dir / "model.safetensors").read_bytes() == b"reward-src"
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]


def test_write_bundle_existing_version_rejected(tmp_path: pathlib.Path, fake_models) -> None:
    _write(tmp_path, "v1", fake_models)

    with pytest.raises(BundleError, match="already exists; bundles are immutable, write a new version"):
        _write(tmp_path, "v1", fake_models)


@pytest.mark.parametrize("version", ["current", "../x", "", ".hidden", "a/b"],
                         ids=["pointer-name", "parent", "empty", "hidden", "slash"])
def test_write_bundle_invalid_version_rejected(tmp_path: pathlib.Path, fake_models, version: str) -> None:
    with pytest.raises(BundleError) as raised:
        _write(tmp_path, version, fake_models)

    assert raised.value.message == (
        f"bundle version {version!r} is invalid; use 1-128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit, and not 'current'"
    )


def _edit_manifest(directory: pathlib.Path, **changes: object) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: (d / "manifest.json").unlink(), "manifest.json not found; a model bundle needs a manifest.json"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json is not a readable JSON file"),
        (lambda d: _edit_manifest(d, version="v9"),
         "version 'v9' differs from the directory name 'v1'; a bundle's directory must be named after its version"),
        (lambda d: _edit_manifest(d, metrics={"test": {"ndcg@10": "high"}}),
         "metrics.test.ndcg@10 must be a finite number, got 'high'"),
        (lambda d: _edit_manifest(d, alpha=1.5), "alpha must be null or a number in [0, 1], got 1.5"),
        (lambda d: _edit_manifest(d, owner="me"), "unknown key(s) owner"),
        (lambda d: (d / "reward" / "config.json").unlink(), "reward has no config.json"),
    ],
    ids=["no-manifest", "bad-json", "version-mismatch", "metric-type", "alpha-range", "unknown-key", "no-reward"],
)
def test_read_bundle_invalid_rejected(tmp_path: pathlib.Path, fake_models, breakage, message: str) -> None:
    _write(tmp_path, "v1", fake_models)
    breakage(tmp_path / "v1")

    with pytest.raises(BundleError) as raised:
        read_bundle(tmp_path / "v1")

    assert message in raised.value.message


def test_read_bundle_invalid_fusion_rejected(tmp_path: pathlib.Path, fake_models) -> None:
    _write(tmp_path, "v1", fake_models)
    (tmp_path / "v1" / "fusion.json").write_text(json.dumps({"format": 1}))

    with pytest.raises(FusionFormatError, match="weights must be an object with 'reward' and 'retriever'"):
        read_bundle(tmp_path / "v1")


def test_set_current_switches_pointer(tmp_path: pathlib.Path, fake_models) -> None:
    _write(tmp_path, "v1", fake_models)
    _write(tmp_path, "v2", fake_models)
    assert current_version(tmp_path) is None
    assert current_bundle(tmp_path) is None

    set_current(tmp_path, "v1")
    assert os.readlink(tmp_path / "current") == "v1"
    set_current(tmp_path, "v2")

    assert current_version(tmp_path) == "v2"
    assert current_bundle(tmp_path).version == "v2"
    assert list_versions(tmp_path) == ["v1", "v2"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_set_current_broken_bundle_keeps_pointer(tmp_path: pathlib.Path, fake_models) -> None:
    _write(tmp_path, "v1", fake_models)
    _write(tmp_path, "v2", fake_models)
    set_current(tmp_path, "v1")
    (tmp_path / "v2" / "fusion.json").unlink()

    with pytest.raises(FusionFormatError, match="fusion.json not found"):
        set_current(tmp_path, "v2")

    assert current_version(tmp_path) == "v1"


def test_current_regular_file_rejected(tmp_path: pathlib.Path) -> None:
    (tmp_path / "current").write_text("v1")

    with pytest.raises(BundleError, match="must be a symbolic link to a bundle directory, found a regular entry"):
        current_version(tmp_path)


# --- promotion ---

def test_promote_worse_candidate_rejected(tmp_path: pathlib.Path, fake_models) -> None:
    _write(tmp_path, "good", fake_models, metrics={"test": {"ndcg@10": 0.60, "ece": 0.04}})
    _write(tmp_path, "worse", fake_models, metrics={"test": {"ndcg@10": 0.55, "ece": 0.09}})
    promote(tmp_path, "good")

    with pytest.raises(PromotionRejectedError) as raised:
        promote(tmp_path, "worse", tolerance=0.01)

    assert raised.value.message == (
        "bundle worse is worse than current bundle good on the test metrics: "
        "ece: candidate 0.0900 vs current 0.0400 (lower is better, worse by 0.0500 > tolerance 0.0100); "
        "ndcg@10: candidate 0.5500 vs current 0.6000 (higher is better, worse by 0.0500 > tolerance 0.0100); "
        "current is unchanged. Improve the candidate or raise the tolerance"
    )
    assert current_version(tmp_path) == "good"


@pytest.mark.parametrize(
    ("candidate_metrics", "tolerance"),
    [({"ndcg@10": 0.61, "ece": 0.03}, 0.0), ({"ndcg@10": 0.595, "ece": 0.045}, 0.01)],
    ids=["better", "within-tolerance"],
)
def test_promote_acceptable_candidate_switches(tmp_path: pathlib.Path, fake_models, candidate_metrics,
                                               tolerance: float) -> None:
    _write(tmp_path, "old", fake_models, metrics={"test": {"ndcg@10": 0.60, "ece": 0.04}})
    _write(tmp_path, "new", fake_models, metrics={"test": candidate_metrics})
    promote(tmp_path, "old")

    promoted = promote(tmp_path, "new", tolerance=tolerance)

    assert promoted.version == "new"
    assert current_version(tmp_path) == "new"


def test_promote_missing_metric_rejected() -> None:
    problems = metric_regressions({"ndcg@10": 0.7}, {"ndcg@10": 0.6, "recall@100": 0.9}, tolerance=0.0)

    assert problems == ["recall@100: missing in the candidate (current 0.9000)"]


def test_promote_negative_tolerance_rejected(tmp_path: pathlib.Path) -> None:
    with pytest.raises(PromotionRejectedError, match="tolerance must be a finite number >= 0, got -0.1"):
        promote(tmp_path, "v1", tolerance=-0.1)


# --- which models a config loads ---

def test_resolve_models_uses_current_bundle(tmp_path: pathlib.Path, fake_models) -> None:
    _write(tmp_path / "models", "v1", fake_models)
    set_current(tmp_path / "models", "v1")

    config, bundle = resolve_models(make_config(tmp_path / "data", models_dir=str(tmp_path / "models")))

    assert bundle.version == "v1"
    assert config.retriever_model == str(bundle.retriever_dir)
    assert config.reward_model == str(bundle.reward_dir)


def test_resolve_models_explicit_setting_wins(tmp_path: pathlib.Path, fake_models) -> None:
    _write(tmp_path / "models", "v1", fake_models)
    set_current(tmp_path / "models", "v1")

    config, bundle = resolve_models(make_config(
        tmp_path / "data", models_dir=str(tmp_path / "models"), retriever_model="/elsewhere/retriever"
    ))

    assert bundle.version == "v1"
    assert config.retriever_model == "/elsewhere/retriever"
    assert config.reward_model == str(bundle.reward_dir)


@pytest.mark.parametrize("with_dir", [False, True], ids=["no-models-dir", "no-current"])
def test_resolve_models_without_bundle_unchanged(tmp_path: pathlib.Path, with_dir: bool) -> None:
    (tmp_path / "models").mkdir()
    original = make_config(tmp_path / "data", models_dir=str(tmp_path / "models") if with_dir else "")

    config, bundle = resolve_models(original)

    assert bundle is None
    assert config == original
