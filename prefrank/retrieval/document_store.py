"""SQLite store of documents, their metadata, their vectors and the string-to-int64 id mapping."""

from __future__ import annotations

import json
import logging
import pathlib
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefrank.errors import IndexCorruptError, InvalidArgumentError

logger = logging.getLogger(__name__)

STORE_FILE = "documents.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    vector_id  INTEGER PRIMARY KEY AUTOINCREMENT,  -- stable FAISS id; never reused
    doc_id     TEXT NOT NULL UNIQUE,
    title      TEXT NOT NULL,
    text       TEXT NOT NULL,
    metadata   TEXT NOT NULL,                       -- JSON object
    truncated  INTEGER NOT NULL,                    -- 1 when embedding cut the text
    embedding  BLOB NOT NULL,                       -- float32 vector, unit norm
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS doc_metadata (
    vector_id INTEGER NOT NULL REFERENCES documents(vector_id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    kind      TEXT NOT NULL,                        -- 'string', 'number' or 'bool'
    value     NOT NULL,
    PRIMARY KEY (vector_id, key)
);
CREATE INDEX IF NOT EXISTS doc_metadata_lookup ON doc_metadata (key, kind, value);
CREATE TABLE IF NOT EXISTS store_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredDocument:
    """A document as stored: ids, text, metadata and whether its embedding was truncated."""

    vector_id: int
    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False

    @property
    def content(self) -> str:
        """Text that is embedded and scored: the title and the body joined by a space."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    replaced: int
    replaced_vector_ids: list[int]
    vector_ids: list[int]


def filter_kind(key: str, value: Any) -> tuple[str, Any]:
    """Return the (kind, stored value) used to index and match one metadata value.

    Raises:
        InvalidArgumentError: the value is not a string, number or boolean.
    """
    if isinstance(value, bool):
        return "bool", int(value)
    if isinstance(value, int | float):
        return "number", float(value)
    if isinstance(value, str):
        return "string", value
    # Callers send filters as a protobuf Struct, so a nested Struct is named "object", not "dict".
    if value is None:
        kind = "null"
    elif isinstance(value, dict):
        kind = "object"
    else:
        kind = type(value).__name__
    raise InvalidArgumentError(
        f"filter.{key}: unsupported filter value type {kind}; "
        "filters match strings, numbers or booleans by equality"
    )


class DocumentStore:
    """Documents in one SQLite file (WAL, synchronous=FULL), safe against crashes mid-write.

    Every write runs in one transaction and bumps ``generation``, which tags FAISS snapshots
    so a stale snapshot is detected at start-up. Not thread-safe: the caller serialises access.
    """

    def __init__(self, directory: pathlib.Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / STORE_FILE
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise IndexCorruptError(f"document store {self.path} does not open: {err}") from err

    def close(self) -> None:
        self._db.close()

    # --- state ---

    def get_state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM store_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO store_state (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value),
        )

    @property
    def generation(self) -> int:
        return int(self.get_state("generation") or 0)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    # --- writes ---

    def upsert(
        self,
        documents: Sequence[Mapping[str, Any]],
        vectors: np.ndarray,
        truncated: Sequence[bool],
    ) -> UpsertCounts:
        """Insert or replace documents with their vectors in one transaction.

        Args:
            documents: Mappings with ``id``, ``text``, ``title`` and ``metadata``.
            vectors: float32 array of shape (len(documents), dim).
            truncated: Per document, whether its embedding input was truncated.
        """
        now = time.time()
        inserted = replaced = 0
        replaced_ids: list[int] = []
        vector_ids: list[int] = []
        with self._transaction():
            for doc, vector, cut in zip(documents, vectors, truncated, strict=True):
                row = self._db.execute(
                    "SELECT vector_id FROM documents WHERE doc_id = ?", (doc["id"],)
                ).fetchone()
                values = (doc["title"], doc["text"], json.dumps(doc["metadata"], ensure_ascii=False),
                          int(cut), vector.astype(np.float32).tobytes(), now)
                if row is None:
                    cursor = self._db.execute(
                        "INSERT INTO documents (doc_id, title, text, metadata, truncated, embedding, "
                        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", (doc["id"], *values),
                    )
                    vector_id = int(cursor.lastrowid)
                    inserted += 1
                else:
                    vector_id = int(row[0])
                    self._db.execute(
                        "UPDATE documents SET title = ?, text = ?, metadata = ?, truncated = ?, "
                        "embedding = ?, updated_at = ? WHERE vector_id = ?", (*values, vector_id),
                    )
                    self._db.execute("DELETE FROM doc_metadata WHERE vector_id = ?", (vector_id,))
                    replaced += 1
                    replaced_ids.append(vector_id)
                vector_ids.append(vector_id)
                self._db.executemany(
                    "INSERT INTO doc_metadata (vector_id, key, kind, value) VALUES (?, ?, ?, ?)",
                    [(vector_id, key, *filter_kind(key, value))
                     for key, value in doc["metadata"].items() if _is_filterable(value)],
                )
            self._bump_generation()
        return UpsertCounts(inserted, replaced, replaced_ids, vector_ids)

    def delete(self, doc_ids: Sequence[str]) -> list[int]:
        """Delete documents by id in one transaction and return their vector ids.

        Unknown ids are skipped; callers that must reject them check ``missing`` first.
        """
        with self._transaction():
            found = self._lookup(doc_ids)
            self._db.executemany("DELETE FROM documents WHERE vector_id = ?", [(v,) for v in found.values()])
            self._bump_generation()
        return list(found.values())

    def replace_embeddings(self, vector_ids: Sequence[int], vectors: np.ndarray, truncated: Sequence[bool]) -> None:
        """Overwrite stored vectors, e.g. after the retriever model changed."""
        with self._transaction():
            self._db.executemany(
                "UPDATE documents SET embedding = ?, truncated = ? WHERE vector_id = ?",
                [(v.astype(np.float32).tobytes(), int(t), int(i))
                 for i, v, t in zip(vector_ids, vectors, truncated, strict=True)],
            )
            self._bump_generation()

    # --- reads ---

    def missing(self, doc_ids: Sequence[str]) -> list[str]:
        """Return the ids in doc_ids that are not stored, in the given order."""
        found = self._lookup(doc_ids)
        return [d for d in doc_ids if d not in found]

    def get(self, vector_ids: Sequence[int]) -> dict[int, StoredDocument]:
        """Fetch documents by vector id; unknown ids are absent from the result."""
        result: dict[int, StoredDocument] = {}
        for chunk in _chunks(list(vector_ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT vector_id, doc_id, title, text, metadata, truncated FROM documents "
                f"WHERE vector_id IN ({marks})", chunk,
            )
            for vector_id, doc_id, title, text, metadata, cut in rows:
                result[vector_id] = StoredDocument(vector_id, doc_id, title, text, json.loads(metadata), bool(cut))
        return result

    def matching(self, filters: Mapping[str, Any]) -> set[int]:
        """Return the vector ids of documents whose metadata equals every filter value."""
        allowed: set[int] | None = None
        for key, value in filters.items():
            kind, stored = filter_kind(key, value)
            rows = self._db.execute(
                "SELECT vector_id FROM doc_metadata WHERE key = ? AND kind = ? AND value = ?",
                (key, kind, stored),
            )
            ids = {r[0] for r in rows}
            allowed = ids if allowed is None else allowed & ids
            if not allowed:
                return set()
        return allowed if allowed is not None else set()

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (vector ids, vectors) batches of every stored document, in vector id order."""
        last = -1
        while True:
            rows = self._db.execute(
                "SELECT vector_id, embedding FROM documents WHERE vector_id > ? ORDER BY vector_id LIMIT ?",
                (last, batch),
            ).fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            yield ids, vectors
            last = int(ids[-1])

    def iter_contents(self, batch: int = 256) -> Iterator[list[StoredDocument]]:
        """Yield batches of every stored document, in vector id order."""
        last = -1
        while True:
            rows = self._db.execute(
                "SELECT vector_id, doc_id, title, text, metadata, truncated FROM documents "
                "WHERE vector_id > ? ORDER BY vector_id LIMIT ?", (last, batch),
            ).fetchall()
            if not rows:
                return
            yield [StoredDocument(r[0], r[1], r[2], r[3], json.loads(r[4]), bool(r[5])) for r in rows]
            last = rows[-1][0]

    # --- helpers ---

    def _lookup(self, doc_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(list(doc_ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT doc_id, vector_id FROM documents WHERE doc_id IN ({marks})", chunk)
            found.update({d: int(v) for d, v in rows})
        return found

    def _bump_generation(self) -> None:
        self.set_state("generation", str(self.generation + 1))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _is_filterable(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
