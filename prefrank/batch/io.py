"""Read candidate files in chunks with line numbers, and write scored parts and their merged output."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
import pathlib
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import pandas as pd

from prefrank.errors import InvalidArgumentError
from prefrank.tabular import file_format

logger = logging.getLogger(__name__)

#: Columns the scorer adds to every output row.
SCORE_COLUMNS = ("score", "relevance_score", "rank")


@dataclass(frozen=True)
class SourceRow:
    """One data row of the input.

    Attributes:
        ordinal: 0-based position among the data rows; resume offsets count these.
        line: 1-based line number as a person finds it: CSV/TSV count the header as line 1 (a
            quoted field with newlines makes later numbers smaller than the physical line), JSONL
            counts physical lines, Parquet counts rows.
        values: Column name to value; None when the line did not parse.
        error: Why the line did not parse, or None.
        raw: The unparsed line when it did not parse.
    """

    ordinal: int
    line: int
    values: dict[str, Any] | None
    error: str | None = None
    raw: str | None = None


def is_compressed(path: pathlib.Path) -> bool:
    return path.suffix.lower() == ".gz"


def check_path_format(path: pathlib.Path, role: str) -> str:
    """Return the file format of path, rejecting gzip-compressed Parquet."""
    kind = file_format(path)
    if kind == "parquet" and is_compressed(path):
        raise InvalidArgumentError(f"{role} {path}: Parquet compresses internally; drop the .gz suffix")
    return kind


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class InputReader:
    """Iterate over an input file in chunks of at most chunk_rows rows.

    ``columns`` is known after the first chunk: the header of a CSV/TSV file, the schema of a
    Parquet file, or the keys of the first JSON object in a JSONL file.
    """

    def __init__(self, path: pathlib.Path, chunk_rows: int) -> None:
        if not path.is_file():
            raise InvalidArgumentError(f"input {path}: file not found")
        self.path = path
        self.format = check_path_format(path, "input")
        self.chunk_rows = chunk_rows
        self.columns: list[str] = []
        self.arrow_schema: Any = None
        self._warned_keys: set[str] = set()

    def chunks(self) -> Iterator[list[SourceRow]]:
        if self.format == "parquet":
            yield from self._parquet_chunks()
        elif self.format == "jsonl":
            yield from self._jsonl_chunks()
        else:
            yield from self._delimited_chunks()

    def _parquet_chunks(self) -> Iterator[list[SourceRow]]:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(self.path)
        self.arrow_schema = parquet.schema_arrow
        self.columns = list(self.arrow_schema.names)
        ordinal = 0
        for batch in parquet.iter_batches(batch_size=self.chunk_rows):
            rows = []
            for values in batch.to_pylist():
                rows.append(SourceRow(ordinal, ordinal + 1, values))
                ordinal += 1
            yield rows

    def _delimited_chunks(self) -> Iterator[list[SourceRow]]:
        tsv = self.format == "tsv"
        try:
            reader = pd.read_csv(
                self.path, sep="\t" if tsv else ",", chunksize=self.chunk_rows, dtype=str,
                keep_default_na=False, quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
            )
            ordinal = 0
            with reader:
                for frame in reader:
                    self.columns = [str(c) for c in frame.columns]
                    rows = []
                    for record in frame.to_dict(orient="records"):
                        values = {str(k): _clean(v) for k, v in record.items()}
                        rows.append(SourceRow(ordinal, ordinal + 2, values))
                        ordinal += 1
                    yield rows
        except pd.errors.EmptyDataError:
            return
        except (ValueError, pd.errors.ParserError) as err:
            raise InvalidArgumentError(f"input {self.path}: does not parse as {self.format}: {err}") from err

    def _jsonl_chunks(self) -> Iterator[list[SourceRow]]:
        opener = gzip.open if is_compressed(self.path) else open
        ordinal = 0
        rows: list[SourceRow] = []
        with opener(self.path, "rt", encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                rows.append(self._parse_json_line(ordinal, line_number, line))
                ordinal += 1
                if len(rows) >= self.chunk_rows:
                    yield rows
                    rows = []
        if rows:
            yield rows

    def _parse_json_line(self, ordinal: int, line_number: int, line: str) -> SourceRow:
        try:
            values = json.loads(line)
        except json.JSONDecodeError as err:
            return SourceRow(ordinal, line_number, None, f"invalid JSON: {err.msg} at column {err.colno}",
                             line.rstrip("\n"))
        if not isinstance(values, dict):
            return SourceRow(ordinal, line_number, None,
                             f"expected a JSON object, got {type(values).__name__}", line.rstrip("\n"))
        if not self.columns:
            self.columns = list(values)
        else:
            extra = [k for k in values if k not in self.columns and k not in self._warned_keys]
            if extra:
                self._warned_keys.update(extra)
                logger.warning("Line %d has key(s) %s that the first object lacks; JSONL output keeps them, "
                               "CSV, TSV and Parquet output drop them", line_number, ", ".join(extra))
        return SourceRow(ordinal, line_number, values)


def output_columns(input_columns: Sequence[str]) -> list[str]:
    """Return the input columns followed by score, relevance_score and rank (replacing earlier ones)."""
    kept = [c for c in input_columns if c not in SCORE_COLUMNS]
    return [*kept, *SCORE_COLUMNS]


def _arrow_schema(rows: list[dict[str, Any]], columns: Sequence[str], input_schema: Any) -> Any:
    """Return the Parquet schema of the output: the input's when it was Parquet, else inferred."""
    import pyarrow as pa

    score_fields = [pa.field("score", pa.float64()), pa.field("relevance_score", pa.float64()),
                    pa.field("rank", pa.int64())]
    if input_schema is not None:
        kept = [f for f in input_schema if f.name not in SCORE_COLUMNS]
        return pa.schema([*kept, *score_fields], metadata=input_schema.metadata)
    inferred = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]).schema if rows else None
    fields = []
    for name in columns:
        if name in SCORE_COLUMNS:
            continue
        kind = inferred.field(name).type if inferred is not None else pa.string()
        # A column that is empty in the first part has type null; string is the usual type of such a column.
        fields.append(pa.field(name, pa.string() if pa.types.is_null(kind) else kind))
    return pa.schema([*fields, *score_fields])


class PartWriter:
    """Write lists of output rows as uncompressed part files in the output's format.

    Args:
        output_format: 'csv', 'tsv', 'jsonl' or 'parquet'.
        columns: Output columns (see ``output_columns``); JSONL keeps every key of each row.
        input_schema: The input's Arrow schema when the input is Parquet.
    """

    def __init__(self, output_format: str, columns: Sequence[str], input_schema: Any = None) -> None:
        self.format = output_format
        self.columns = list(columns)
        self._input_schema = input_schema
        self.schema: Any = None

    @property
    def suffix(self) -> str:
        return "." + self.format

    def write(self, path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
        """Write rows to path atomically (a temporary file renamed into place)."""
        tmp = path.with_name(path.name + ".tmp")
        if self.format == "parquet":
            self._write_parquet(tmp, rows)
        elif self.format == "jsonl":
            with tmp.open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        else:
            frame = pd.DataFrame(rows, columns=self.columns)
            frame.to_csv(tmp, sep="\t" if self.format == "tsv" else ",", index=False, header=False,
                         lineterminator="\n")
        os.replace(tmp, path)

    def _write_parquet(self, path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.schema is None:
            self.schema = _arrow_schema(rows, self.columns, self._input_schema)
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise InvalidArgumentError(
                f"output: a column changes type between rows ({err}); Parquet needs one type per column. "
                "Write CSV or JSONL output instead, or make the input column types consistent"
            ) from err
        pq.write_table(table, path)

    def header(self) -> str:
        """Return the CSV/TSV header line."""
        buffer = io.StringIO()
        pd.DataFrame(columns=self.columns).to_csv(buffer, sep="\t" if self.format == "tsv" else ",",
                                                  index=False, lineterminator="\n")
        return buffer.getvalue()

    def merge(self, parts: Sequence[pathlib.Path], output: pathlib.Path) -> None:
        """Concatenate the parts, in order, into output (written to a temporary file, then renamed)."""
        tmp = output.with_name(output.name + ".tmp")
        if self.format == "parquet":
            self._merge_parquet(parts, tmp)
        else:
            with _open_binary(tmp) as target:
                if self.format in ("csv", "tsv"):
                    target.write(self.header().encode("utf-8"))
                for part in parts:
                    with part.open("rb") as source:
                        shutil.copyfileobj(source, target, 1 << 20)
        os.replace(tmp, output)

    def _merge_parquet(self, parts: Sequence[pathlib.Path], path: pathlib.Path) -> None:
        import pyarrow.parquet as pq

        schema = pq.read_schema(parts[0]) if parts else _arrow_schema([], self.columns, self._input_schema)
        with pq.ParquetWriter(path, schema) as writer:
            for part in parts:
                writer.write_table(pq.read_table(part).cast(schema))


def _open_binary(path: pathlib.Path) -> IO[bytes]:
    """Open path for binary writing, through gzip when the final name ends in .gz."""
    final = path.with_name(path.name.removesuffix(".tmp"))
    return gzip.open(path, "wb") if is_compressed(final) else path.open("wb")


def write_rejects(path: pathlib.Path, rejects: Sequence[Any]) -> None:
    """Write reject records (line, reason, row or raw line) as JSONL, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for reject in rejects:
            record: dict[str, Any] = {"line": reject.line, "kind": reject.kind, "reason": reject.reason}
            if reject.row is not None:
                record["row"] = reject.row
            else:
                record["raw"] = reject.raw
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def merge_text(parts: Sequence[pathlib.Path], output: pathlib.Path) -> None:
    """Concatenate text parts into output atomically."""
    tmp = output.with_name(output.name + ".tmp")
    with _open_binary(tmp) as target:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, target, 1 << 20)
    os.replace(tmp, output)
