"""Read preference files (CSV, TSV, JSONL, JSONL.gz, Parquet) into two canonical frames.

A *pairs* frame has one judgement per row: ``group, query, chosen, rejected, margin, weight``.
A *graded* frame has one scored candidate per row: ``group, query, candidate, score``; preparation
turns it into pairs inside each group. ``group`` is the key of the train/dev/test split (the
query, a segment id, a user id), so every row of one group lands on one side.
"""

from __future__ import annotations

import csv
import gzip
import json
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prefrank.errors import PrefrankError

PAIR_COLUMNS = ("group", "query", "chosen", "rejected", "margin", "weight")
GRADED_COLUMNS = ("group", "query", "candidate", "score")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
            ".parquet": "parquet"}


class DataError(PrefrankError):
    """An input file is missing, does not parse, or lacks a mapped column."""


@dataclass(frozen=True)
class LoadedData:
    """The rows of one source in canonical form and the files they came from.

    Attributes:
        kind: ``"pairs"`` or ``"graded"``.
        frame: A DataFrame with ``PAIR_COLUMNS`` or ``GRADED_COLUMNS``.
        files: Every input file read, for the manifest (their sha256 is taken there).
        notes: Counts the loader itself dropped or derived, keyed by reason.
    """

    kind: str
    frame: pd.DataFrame
    files: tuple[pathlib.Path, ...]
    notes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = PAIR_COLUMNS if self.kind == "pairs" else GRADED_COLUMNS
        if self.kind not in ("pairs", "graded"):
            raise DataError(f"LoadedData.kind must be 'pairs' or 'graded', got {self.kind!r}")
        if tuple(self.frame.columns) != expected:
            raise DataError(f"{self.kind} frame must have columns {expected}, got {tuple(self.frame.columns)}")


def file_format(path: pathlib.Path) -> str:
    """Return 'csv', 'tsv', 'jsonl' or 'parquet' from the file name (a trailing .gz is allowed)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in _FORMATS:
        raise DataError(f"{path}: unknown file type; expected one of {', '.join(sorted(_FORMATS))} (optionally .gz)")
    return _FORMATS[suffixes[-1]]


def read_table(path: pathlib.Path, *, sep: str | None = None) -> pd.DataFrame:
    """Read a whole file with every column as a string (Parquet keeps its types).

    Args:
        path: The file. The format comes from the suffix.
        sep: Field separator for CSV/TSV; None uses ',' for .csv and a tab for .tsv.

    Raises:
        DataError: the file is missing or a line does not parse; the message names the file and line.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the recipe's path or PREFRANK_DATA_DIR")
    kind = file_format(path)
    if kind == "parquet":
        return pd.read_parquet(path)
    if kind == "jsonl":
        return _read_jsonl(path)
    try:
        return pd.read_csv(path, sep=sep or ("\t" if kind == "tsv" else ","), dtype=str, keep_default_na=False,
                           quoting=csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: does not parse as {kind.upper()}: {err}") from err


def _read_jsonl(path: pathlib.Path) -> pd.DataFrame:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    records = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {line_number}: invalid JSON ({err.msg} at column {err.colno})") from err
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return pd.DataFrame.from_records(records)


def select_columns(frame: pd.DataFrame, path: pathlib.Path, columns: Mapping[str, str | None]) -> pd.DataFrame:
    """Rename mapped file columns to canonical names, keeping only those.

    Args:
        frame: The file as read.
        path: The file, for messages.
        columns: canonical name -> column in the file; None leaves the canonical column out.

    Raises:
        DataError: a mapped column is not in the file.
    """
    wanted = {canonical: source for canonical, source in columns.items() if source}
    missing = [source for source in wanted.values() if source not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: column(s) {missing} not found; the file has {list(frame.columns)}. "
            "Fix the column mapping in the recipe's [source] section"
        )
    return pd.DataFrame({canonical: frame[source].to_numpy() for canonical, source in wanted.items()})


def to_float(values: pd.Series, path: pathlib.Path, column: str, *, header_lines: int = 1) -> np.ndarray:
    """Parse a column as floats, naming the file, line and column of the first bad value.

    Raises:
        DataError: a value is empty or not a number.
    """
    parsed = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{path}, line {row + 1 + header_lines}, column {column!r}: expected a number, got {values.iloc[row]!r}"
        )
    return parsed.to_numpy(dtype=np.float64)


def load_pairs(path: pathlib.Path, *, query: str = "query", chosen: str = "chosen", rejected: str = "rejected",
               margin: str | None = None, weight: str | None = None, group: str | None = None) -> LoadedData:
    """Load a pairwise file: one (query, chosen, rejected) judgement per row.

    Args:
        path: CSV, TSV, JSONL(.gz) or Parquet file.
        query, chosen, rejected: Column names in the file.
        margin: Optional column with how strongly chosen is preferred (>= 0).
        weight: Optional column with a per-pair loss weight (> 0).
        group: Optional split key column; defaults to the query text.

    Raises:
        DataError: a column is missing or a margin/weight does not parse.
    """
    header_lines = 0 if file_format(path) in ("jsonl", "parquet") else 1
    raw = read_table(path)
    frame = select_columns(raw, path, {"query": query, "chosen": chosen, "rejected": rejected, "group": group})
    frame["margin"] = to_float(raw[margin], path, margin, header_lines=header_lines) if margin else np.nan
    frame["weight"] = to_float(raw[weight], path, weight, header_lines=header_lines) if weight else 1.0
    if "group" not in frame:
        frame["group"] = frame["query"]
    for column in ("query", "chosen", "rejected", "group"):
        frame[column] = frame[column].astype(str)
    return LoadedData("pairs", frame[list(PAIR_COLUMNS)], (path,))


def load_graded(path: pathlib.Path, *, query: str = "query", candidate: str = "candidate", score: str = "score",
                group: str | None = None) -> LoadedData:
    """Load a graded file: one (query, candidate, score) row per judged candidate; higher score is better.

    Raises:
        DataError: a column is missing or a score does not parse.
    """
    header_lines = 0 if file_format(path) in ("jsonl", "parquet") else 1
    raw = read_table(path)
    frame = select_columns(raw, path, {"query": query, "candidate": candidate, "group": group})
    frame["score"] = to_float(raw[score], path, score, header_lines=header_lines)
    if "group" not in frame:
        frame["group"] = frame["query"]
    for column in ("query", "candidate", "group"):
        frame[column] = frame[column].astype(str)
    return LoadedData("graded", frame[list(GRADED_COLUMNS)], (path,))
