"""The run manifest: what was scored with which model, and the checkpoint that --resume continues from."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import pathlib
from typing import Any

from prefrank.errors import InvalidArgumentError

MANIFEST_VERSION = 1


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def fingerprint(path: pathlib.Path, file_format: str) -> dict[str, Any]:
    """Return the sha256 and size of a file, and an estimate of its data rows for the progress bar.

    The estimate counts newlines (minus the header for CSV/TSV), so quoted fields with newlines
    and blank lines make it a little high; Parquet row counts are exact.
    """
    digest = hashlib.sha256()
    newlines = 0
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            newlines += block.count(b"\n")
    if file_format == "parquet":
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
    elif path.suffix.lower() == ".gz":
        with gzip.open(path, "rb") as handle:
            rows = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    else:
        rows = newlines
    if file_format in ("csv", "tsv"):
        rows = max(rows - 1, 0)
    return {"path": str(path.resolve()), "format": file_format, "sha256": digest.hexdigest(),
            "bytes": size, "estimated_rows": rows}


def write_json_atomic(path: pathlib.Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file, flush it to disk, then rename it over path."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load(path: pathlib.Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InvalidArgumentError(f"manifest {path}: failed to load ({err}); delete it and the parts "
                                   "directory and score again") from err
    if data.get("manifest_version") != MANIFEST_VERSION:
        raise InvalidArgumentError(f"manifest {path}: version {data.get('manifest_version')!r} is not "
                                   f"{MANIFEST_VERSION}; score again without --resume")
    return data


def check_resumable(manifest: dict[str, Any], expected: dict[str, Any], path: pathlib.Path) -> None:
    """Raise unless the stored run used the same input, options and models as this one.

    Args:
        manifest: The stored manifest.
        expected: A new manifest for this run, not yet written.
        path: Where the manifest lives, for messages.
    """
    if manifest.get("status") == "complete":
        raise InvalidArgumentError(f"manifest {path}: the run is already complete; nothing to resume")
    checks = {
        "input sha256": (manifest["input"]["sha256"], expected["input"]["sha256"]),
        "options": (manifest["options"], expected["options"]),
        "model versions": (manifest["model"], expected["model"]),
        "engine": (manifest["engine"], expected["engine"]),
    }
    for name, (stored, current) in checks.items():
        if stored != current:
            raise InvalidArgumentError(
                f"--resume: {name} changed since the interrupted run ({stored!r} then, {current!r} now); "
                "resume with the same input, options and model, or score again without --resume"
            )


def new_manifest(
    *, engine: str, input_info: dict[str, Any], output: pathlib.Path, rejects: pathlib.Path,
    options: dict[str, Any], model: dict[str, Any],
) -> dict[str, Any]:
    now = utc_now()
    return {
        "manifest_version": MANIFEST_VERSION,
        "status": "running",
        "engine": engine,
        "input": input_info,
        "output": str(output.resolve()),
        "rejects": str(rejects.resolve()),
        "options": options,
        "model": model,
        # Checkpoint: every input row before rows_done is in a finished part.
        "rows_done": 0,
        "parts": [],
        "rows": {"read": 0, "scored": 0, "rejected": 0, "groups": 0},
        "rejected_by_kind": {},
        "timing": {"started_at": now, "updated_at": now, "finished_at": None, "elapsed_seconds": 0.0,
                   "runs": 1},
    }


def model_record(ranker: Any) -> dict[str, Any]:
    """Describe the scorer and the retriever by name, content version, path and inference backend."""

    def describe(description: Any) -> dict[str, Any]:
        # The backend (fp32, bf16, int8) changes the scores, so a resume must use the same one.
        return {"name": description.name, "version": description.version, "path": description.path,
                "backend": description.backend}

    return {
        "scorer": ranker.scorer.kind,
        "ordered_by": ranker.scorer_name,
        "bundle_version": ranker.bundle_version,
        "scorer_model": describe(ranker.scorer.description),
        "retriever_model": describe(ranker.encoder.description),
    }
