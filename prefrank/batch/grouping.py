"""Check input rows and collect each query's candidates into one group, across chunk boundaries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from prefrank.batch.io import SourceRow
from prefrank.errors import InvalidArgumentError
from prefrank.validation import check_text


@dataclass(frozen=True, kw_only=True)
class ScoreColumns:
    """Which input columns hold the query and the candidate; every other column passes through."""

    query: str = field(default="query", metadata={"help": "column with the query text"})
    text: str = field(default="text", metadata={"help": "column with the candidate text"})
    query_id: str | None = field(
        default=None, metadata={"help": "column with the query id; None groups adjacent rows by query text"}
    )
    candidate_id: str | None = field(
        default=None, metadata={"help": "column with the candidate id; None uses the line number"}
    )

    def __post_init__(self) -> None:
        names = [n for n in (self.query, self.text, self.query_id, self.candidate_id) if n is not None]
        if any(not n for n in names):
            raise InvalidArgumentError("column names must not be empty; omit an optional column instead")
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"each mapped column must be distinct, got {', '.join(names)}")

    def required(self) -> list[str]:
        return [n for n in (self.query_id, self.query, self.candidate_id, self.text) if n is not None]


@dataclass(frozen=True)
class Reject:
    """A row left out of the output: ``kind`` is a short category counted in the summary."""

    ordinal: int
    line: int
    kind: str
    reason: str
    row: dict[str, Any] | None
    raw: str | None = None


@dataclass
class Group:
    """The accepted rows of one query, in input order.

    ``end`` is the ordinal of the row that closed the group (or the row count at the end of the
    input): every row before it is either in this group, in an earlier group, or rejected.
    """

    key: str
    query: str
    rows: list[SourceRow] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    end: int = 0


def _digest(key: str) -> bytes:
    # 16-byte digests keep the set of finished groups small when there are millions of queries.
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


def _text(name: str, values: dict[str, Any], column: str, max_chars: int) -> tuple[str, tuple[str, str] | None]:
    """Return (text, None) for a usable text value, else ("", (kind, reason))."""
    value = values.get(column)
    if value is None:
        return "", (f"missing {name}", f"{name}: missing value in column {column!r}")
    text = value if isinstance(value, str) else str(value)
    try:
        check_text(name, text, max_chars)
    except InvalidArgumentError as err:
        kind = f"empty {name}" if not text.strip() else f"{name} too long"
        return "", (kind, err.message)
    return text, None


class Grouper:
    """Turn a stream of rows into rejects and complete query groups, in input order.

    Rows of one query must be adjacent. A query key that comes back after its group closed is
    rejected row by row with a reason, so an unsorted file loses no rows silently.

    Args:
        columns: The column mapping.
        max_text_chars: Longest query or candidate text; longer rows are rejected.
    """

    def __init__(self, columns: ScoreColumns, max_text_chars: int) -> None:
        self._columns = columns
        self._max_chars = max_text_chars
        self._current: Group | None = None
        self._current_start = 0
        self._finished: set[bytes] = set()
        self._ids: set[str] = set()

    def check_columns(self, present: list[str], path: object) -> None:
        missing = [c for c in self._columns.required() if c not in present]
        if missing:
            raise InvalidArgumentError(
                f"input {path}: missing column(s) {', '.join(missing)}; the file has {', '.join(present)}. "
                "Map them with --query-column / --text-column / --query-id-column / --candidate-id-column"
            )

    def feed(self, row: SourceRow) -> list[Reject | Group]:
        """Process one row; return the rejects and groups it completes, in order."""
        if row.values is None:
            return [Reject(row.ordinal, row.line, "invalid JSON", row.error or "invalid JSON", None, row.raw)]
        values = row.values
        columns = self._columns

        # Check the row on its own
        query, reason = _text("query", values, columns.query, self._max_chars)
        if reason is None:
            _, reason = _text("candidate text", values, columns.text, self._max_chars)
        key = query
        if reason is None and columns.query_id is not None:
            key, reason = _text("query id", values, columns.query_id, self._max_chars)
        candidate_id = str(row.line)
        if reason is None and columns.candidate_id is not None:
            candidate_id, reason = _text("candidate id", values, columns.candidate_id, self._max_chars)
        if reason is not None:
            return [Reject(row.ordinal, row.line, *reason, values)]

        # Place it in its group
        events: list[Reject | Group] = []
        current = self._current
        if current is None or key != current.key:
            if current is not None:
                events.append(self._close(row.ordinal))
            if _digest(key) in self._finished:
                label = "query id" if columns.query_id else "query"
                events.append(Reject(row.ordinal, row.line, "query not adjacent",
                                     f"{label}: {key!r} comes back after its group ended; rows of one query "
                                     f"must be adjacent, so sort the input by the {label} column", values))
                return events
            current = self._current = Group(key=key, query=query)
        if query != current.query:
            return [*events, Reject(row.ordinal, row.line, "query differs within query id",
                                    f"query: differs from the text in line {current.rows[0].line} "
                                    "of the same query id", values)]
        if candidate_id in self._ids:
            return [*events, Reject(row.ordinal, row.line, "duplicate candidate id",
                                    f"candidate id: duplicate {candidate_id!r} within the query", values)]
        self._ids.add(candidate_id)
        current.rows.append(row)
        current.ids.append(candidate_id)
        current.texts.append(values[columns.text] if isinstance(values[columns.text], str)
                             else str(values[columns.text]))
        return events

    def finish(self, total_rows: int) -> list[Group]:
        """Close the last group at the end of the input."""
        return [self._close(total_rows)] if self._current is not None else []

    def _close(self, end: int) -> Group:
        group = self._current
        if group is None:
            raise RuntimeError("no open group to close")
        group.end = end
        self._finished.add(_digest(group.key))
        self._current = None
        self._ids = set()
        return group
