"""The document index: SQLite store of record plus an in-memory FAISS index, persisted together."""

from __future__ import annotations

import logging
import pathlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from prefrank.errors import IndexCorruptError, NotFoundError
from prefrank.retrieval.document_store import DocumentStore, StoredDocument, UpsertCounts
from prefrank.retrieval.encoder import BiEncoder
from prefrank.retrieval.vector_index import IndexSpec, VectorIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievedDocument:
    """A document returned by a vector search, with its cosine similarity and 1-based rank."""

    document: StoredDocument
    score: float
    rank: int


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    replaced: int
    truncated: int


class DocumentIndex:
    """Documents in SQLite (the store of record) and their vectors in FAISS.

    SQLite commits every write before it is acknowledged. The FAISS index is a derived snapshot:
    it is saved every ``snapshot_seconds`` after a change and on ``close``, tagged with the
    store's generation. At start-up a snapshot whose generation differs from the store's, or
    that is missing or unreadable, is rebuilt from the stored vectors, so a crash loses no acknowledged write.

    Args:
        directory: Data directory for ``documents.sqlite3`` and the FAISS snapshot.
        encoder: The bi-encoder that embeds documents and queries.
        spec: FAISS index shape and type; ``spec.dimension`` must equal the encoder's.
    """

    def __init__(self, directory: pathlib.Path, encoder: BiEncoder, spec: IndexSpec) -> None:
        self.directory = directory
        self.spec = spec
        self._encoder = encoder
        self._lock = threading.RLock()
        self._dirty = False
        self._store = DocumentStore(directory)
        self._reembed_if_model_changed()
        self._vectors = self._load_or_rebuild()

    # --- start-up ---

    def _reembed_if_model_changed(self) -> None:
        version = self._encoder.description.version
        stored = self._store.get_state("retriever_version")
        if stored is not None and stored != version and self._store.count():
            logger.warning(
                "Stored vectors come from retriever version %s, the loaded retriever is %s; "
                "re-embedding %d documents", stored, version, self._store.count(),
            )
            with tqdm(total=self._store.count(), desc="re-embedding", unit="doc") as progress:
                for batch in self._store.iter_contents():
                    vectors = self._encoder.encode([d.content for d in batch])
                    cut = self._encoder.truncated([d.content for d in batch])
                    self._store.replace_embeddings([d.vector_id for d in batch], vectors, cut)
                    progress.update(len(batch))
        self._store.set_state("retriever_version", version)

    def _load_or_rebuild(self) -> VectorIndex:
        try:
            loaded = VectorIndex.load(self.directory, self.spec)
        except IndexCorruptError as err:
            # The snapshot is derived from the document store, so an unreadable one is rebuilt.
            logger.warning("%s; rebuilding it from the document store", err.message)
            loaded = None
        generation = self._store.generation
        if loaded is not None and loaded[1] == generation and loaded[0].size == self._store.count():
            logger.info("Loaded FAISS snapshot: %d vectors (generation %d)", loaded[0].size, generation)
            return loaded[0]
        if loaded is not None:
            logger.warning(
                "FAISS snapshot is at generation %d, the document store at %d; rebuilding",
                loaded[1], generation,
            )
        vectors = self._rebuild()
        vectors.save(self.directory, generation)
        return vectors

    def _rebuild(self) -> VectorIndex:
        vectors = VectorIndex(self.spec)
        for ids, batch in self._store.iter_vectors():
            vectors.add(ids, batch)
        logger.info("Built %s FAISS index from the document store: %d vectors", self.spec.index_type, vectors.size)
        return vectors

    # --- writes ---

    def upsert(self, documents: Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Embed and store documents; a stored document with the same id is replaced.

        Args:
            documents: Mappings with ``id``, ``text``, ``title`` and ``metadata``, already validated.
        """
        contents = [f"{d['title']} {d['text']}" if d["title"] else d["text"] for d in documents]
        vectors = self._encoder.encode(contents)
        cut = self._encoder.truncated(contents)
        with self._lock:
            counts: UpsertCounts = self._store.upsert(documents, vectors, cut)
            if counts.replaced_vector_ids and not self._vectors.supports_remove:
                self._vectors = self._rebuild()
            else:
                if counts.replaced_vector_ids:
                    self._vectors.remove(np.array(counts.replaced_vector_ids, dtype=np.int64))
                self._vectors.add(np.array(counts.vector_ids, dtype=np.int64), vectors)
            self._dirty = True
        return UpsertResult(counts.inserted, counts.replaced, sum(cut))

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents by id, all or nothing.

        Raises:
            NotFoundError: one or more ids are not stored; nothing was deleted.
        """
        with self._lock:
            missing = self._store.missing(doc_ids)
            if missing:
                shown = ", ".join(repr(m) for m in missing[:10])
                more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                raise NotFoundError(f"ids: {len(missing)} unknown document id(s): {shown}{more}; nothing was deleted")
            vector_ids = self._store.delete(doc_ids)
            if self._vectors.supports_remove:
                self._vectors.remove(np.array(vector_ids, dtype=np.int64))
            else:
                self._vectors = self._rebuild()
            self._dirty = True
        return len(vector_ids)

    def snapshot(self) -> bool:
        """Save the FAISS index if it changed since the last save; return whether it saved."""
        with self._lock:
            if not self._dirty:
                return False
            self._vectors.save(self.directory, self._store.generation)
            self._dirty = False
            return True

    def close(self) -> None:
        """Save a pending snapshot and close the store."""
        if self.snapshot():
            logger.info("Saved FAISS snapshot: %d vectors in %s", self._vectors.size, self.directory)
        with self._lock:
            self._store.close()

    # --- reads ---

    def search(
        self, query_vector: np.ndarray, k: int, filters: Mapping[str, Any] | None = None
    ) -> list[RetrievedDocument]:
        """Return the k documents nearest to a unit query vector of shape (dimension,).

        Args:
            filters: Metadata equality filters; every key must match.
        """
        with self._lock:
            allowed = self._store.matching(filters) if filters else None
            if allowed is not None and not allowed:
                return []
            scores, ids = self._vectors.search(query_vector.reshape(1, -1), k, allowed)
            documents = self._store.get([int(i) for i in ids[0]])
        return [
            RetrievedDocument(documents[int(i)], float(s), rank)
            for rank, (s, i) in enumerate(zip(scores[0], ids[0], strict=True), start=1)
            if int(i) in documents
        ]

    def count(self) -> int:
        with self._lock:
            return self._store.count()

    def iter_documents(self, batch: int = 256) -> Iterator[list[StoredDocument]]:
        """Yield batches of every stored document in vector id order, each batch read under the lock.

        Writes may land between batches; a caller that needs a consistent view must stop them.
        """
        batches = self._store.iter_contents(batch)
        while True:
            with self._lock:
                documents = next(batches, None)
            if documents is None:
                return
            yield documents

    @property
    def vector_count(self) -> int:
        return self._vectors.size

    @property
    def retriever_version(self) -> str:
        """Version of the retriever whose vectors this index holds."""
        return self._encoder.description.version
