"""Glue of the reward pipeline: recipe -> prepared data -> versioned artifact with manifest -> evaluation.

An artifact is ``<train.output_dir>/<recipe>/<version>/``: the CrossEncoder saved by
``CrossEncoder.save`` (loads in plain sentence-transformers; ``PREFRANK_REWARD_MODEL`` can point
at it), ``manifest.json``, ``data_report.json``/``.md`` and ``evaluation.md``. ``latest`` next to
the versions is a symlink to the newest one.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import pathlib
import platform
from importlib import metadata
from typing import Any

from prefrank.artifacts import bundled_retriever_path, model_version
from prefrank.errors import ModelLoadError
from training.data_report import add_unk_rates, write_data_report
from training.prepare import PreparedData, prepare
from training.recipe import Recipe
from training.sources import load_source

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_LIBRARIES = ("torch", "transformers", "sentence-transformers", "tokenizers", "numpy", "pandas", "scipy")


def data_dir() -> pathlib.Path:
    """Return PREFRANK_DATA_DIR, default ``../shared/data`` relative to the repository."""
    default = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return pathlib.Path(os.environ.get("PREFRANK_DATA_DIR", default)).expanduser().resolve()


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_model_dir(recipe: Recipe) -> str:
    return recipe.train.base_model or str(bundled_retriever_path())


def load_and_prepare(recipe: Recipe) -> PreparedData:
    """Load the recipe's source, prepare it and complete the report with file hashes and [UNK] rates."""
    from transformers import AutoTokenizer

    loaded = load_source(recipe.source.kind, data_dir(), recipe.source.options)
    prepared = prepare(loaded, recipe.prepare)
    prepared.report["recipe"] = recipe.name
    prepared.report["files"] = {str(path): sha256_file(path) for path in loaded.files}
    base = base_model_dir(recipe)
    add_unk_rates(prepared, AutoTokenizer.from_pretrained(base), base, recipe.prepare.unk_warn_rate)
    return prepared


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save_artifact(model: Any, recipe: Recipe, prepared: PreparedData, result: Any) -> pathlib.Path:
    """Save the model, data report and manifest under a new version directory and point ``latest`` at it."""
    created = datetime.datetime.now(datetime.UTC)
    recipe_dir = pathlib.Path(recipe.train.output_dir) / recipe.name
    directory = recipe_dir / created.strftime("%Y%m%dT%H%M%S%fZ")
    model.save(str(directory))
    write_data_report(prepared.report, directory)
    base = base_model_dir(recipe)
    manifest = {
        "kind": "reward-model",
        "model_version": model_version(directory),
        "created": created.isoformat(timespec="seconds"),
        "recipe": recipe.to_dict(),
        "recipe_file": recipe.path,
        "base_model": {"path": base, "version": model_version(pathlib.Path(base))},
        "inputs": [{"path": path, "sha256": digest} for path, digest in prepared.report["files"].items()],
        "data_report": prepared.report,
        "training": dataclasses.asdict(result),
        "metrics": {"dev": {"accuracy": result.best_dev_accuracy, "pairs": len(prepared.pairs["dev"])}},
        "libraries": _library_versions(),
    }
    write_manifest(directory, manifest)
    latest = recipe_dir / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(directory.name)
    logger.info("Saved reward model artifact %s (version %s)", directory, manifest["model_version"])
    return directory


def read_manifest(directory: pathlib.Path) -> dict[str, Any]:
    """Return the artifact's manifest.

    Raises:
        ModelLoadError: the directory has no readable manifest.json.
    """
    path = directory / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: no readable reward-model manifest ({err}); train one with "
                             "`make train-reward RECIPE=<name>`") from err


def write_manifest(directory: pathlib.Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json atomically (a reader never sees half a file)."""
    temporary = directory / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    temporary.replace(directory / MANIFEST)


def latest_artifact(recipe: Recipe) -> pathlib.Path:
    """Return ``<output_dir>/<recipe>/latest`` resolved.

    Raises:
        ModelLoadError: the recipe has no trained artifact yet.
    """
    latest = pathlib.Path(recipe.train.output_dir) / recipe.name / "latest"
    if not latest.exists():
        raise ModelLoadError(f"no trained artifact at {latest}; run `make train-reward RECIPE={recipe.name}` first")
    return latest.resolve()


def evaluate_artifact(directory: pathlib.Path, recipe: Recipe, prepared: PreparedData) -> dict[str, Any]:
    """Evaluate the artifact and the baselines on the test split; store results in the manifest and evaluation.md."""
    from sentence_transformers import CrossEncoder

    from training.evaluate_reward import (
        cosine_scorer,
        evaluate_methods,
        format_table,
        length_scorer,
        random_scorer,
        reward_scorer,
    )

    manifest = read_manifest(directory)
    model = CrossEncoder(str(directory), device="cpu", local_files_only=True)
    batch_size = recipe.eval.batch_size
    scorers = {
        "reward model (this artifact)": reward_scorer(model, batch_size),
        "base bi-encoder cosine": cosine_scorer(base_model_dir(recipe), batch_size),
        "length (longer wins)": length_scorer,
        "random": random_scorer(recipe.train.seed),
    }
    results = evaluate_methods(prepared.pairs["test"], prepared.test_lists, scorers, recipe.eval)
    table = format_table(results)
    if prepared.report.get("unk_warning"):
        table += f"\nWARNING: {prepared.report['unk_message']}\n"
    manifest.setdefault("metrics", {})["test"] = results["reward model (this artifact)"]
    manifest["baselines"] = {name: value for name, value in results.items() if name != "reward model (this artifact)"}
    manifest["evaluation_table"] = table
    manifest["evaluated"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    write_manifest(directory, manifest)
    (directory / "evaluation.md").write_text(f"# Test split: {recipe.name}\n\n{table}", encoding="utf-8")
    return results
