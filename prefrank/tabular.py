"""Read document files (JSONL, CSV, TSV, Parquet) in chunks with explicit column mapping."""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from prefrank.errors import InvalidArgumentError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


@dataclass(frozen=True)
class DocumentColumns:
    """Which columns hold the id, text, title and metadata of each document.

    ``metadata=None`` takes every other column; an empty tuple takes none. A JSONL column
    named ``metadata`` that contains objects is merged into the metadata.
    """

    id: str = "id"
    text: str = "text"
    title: str | None = "title"
    metadata: tuple[str, ...] | None = None


@dataclass
class ReadReport:
    """Rows read and rows skipped, with 1-based line numbers of the skipped rows (header = line 1)."""

    rows: int = 0
    skipped: dict[str, list[int]] = field(default_factory=dict)

    def skip(self, reason: str, line: int) -> None:
        self.skipped.setdefault(reason, []).append(line)


def file_format(path: pathlib.Path) -> str:
    """Return 'jsonl', 'csv', 'tsv' or 'parquet' from the file name (a .gz suffix is allowed)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in FORMATS:
        raise InvalidArgumentError(
            f"{path}: unknown file type; expected one of {', '.join(sorted(FORMATS))} (optionally .gz)"
        )
    return FORMATS[suffixes[-1]]


def count_rows(path: pathlib.Path) -> int | None:
    """Return the number of data rows when it is cheap to know (Parquet metadata), else None."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def read_frames(path: pathlib.Path, chunk_rows: int = 1000) -> Iterator[pd.DataFrame]:
    """Yield the file as DataFrames of at most chunk_rows rows; text columns stay strings."""
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: file not found")
    kind = file_format(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    try:
        if kind == "jsonl":
            reader = pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False, convert_dates=False)
        else:
            reader = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", chunksize=chunk_rows,
                                 dtype=str, keep_default_na=False, quoting=3 if kind == "tsv" else 0)
        with reader:
            yield from reader
    except (ValueError, pd.errors.ParserError) as err:
        raise InvalidArgumentError(f"{path}: does not parse as {kind}: {err}") from err


def _clean(value: Any) -> Any:
    """Convert pandas/numpy scalars to JSON-compatible Python values; NaN becomes None."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def read_documents(
    path: pathlib.Path, columns: DocumentColumns, chunk_rows: int = 1000, report: ReadReport | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Yield batches of documents ({id, text, title, metadata}) read from path.

    Rows with an empty id or text are skipped and recorded in report with their line number.

    Raises:
        InvalidArgumentError: the file type is unknown, it does not parse, or a mapped column is missing.
    """
    report = report if report is not None else ReadReport()
    line = 1 if file_format(path) in ("csv", "tsv") else 0
    for frame in read_frames(path, chunk_rows):
        _check_columns(path, frame.columns, columns)
        meta_columns = _metadata_columns(frame.columns, columns)
        batch = []
        for row in frame.to_dict(orient="records"):
            line += 1
            report.rows += 1
            doc_id = _clean(row.get(columns.id))
            text = _clean(row.get(columns.text))
            if doc_id is None or str(doc_id).strip() == "":
                report.skip("empty id", line)
                continue
            if text is None or str(text).strip() == "":
                report.skip("empty text", line)
                continue
            title = _clean(row.get(columns.title)) if columns.title else None
            metadata = {c: _clean(row[c]) for c in meta_columns if _clean(row[c]) is not None}
            if isinstance(metadata.get("metadata"), dict):
                metadata.update(metadata.pop("metadata"))
            elif isinstance(metadata.get("metadata"), str):
                metadata.update(_parse_json_object(metadata.pop("metadata")))
            batch.append({"id": str(doc_id), "text": str(text), "title": str(title or ""), "metadata": metadata})
        yield batch


def _parse_json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"metadata": raw}
    return value if isinstance(value, dict) else {"metadata": raw}


def _check_columns(path: pathlib.Path, present: Sequence[str], columns: DocumentColumns) -> None:
    required = [columns.id, columns.text, *(columns.metadata or ())]
    missing = [c for c in required if c not in present]
    if missing:
        raise InvalidArgumentError(
            f"{path}: missing column(s) {', '.join(missing)}; the file has {', '.join(map(str, present))}. "
            "Map them with --id-column / --text-column / --title-column / --metadata-columns"
        )


def _metadata_columns(present: Sequence[str], columns: DocumentColumns) -> list[str]:
    if columns.metadata is not None:
        return list(columns.metadata)
    taken = {columns.id, columns.text, columns.title}
    return [c for c in present if c not in taken]
