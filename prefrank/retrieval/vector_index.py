"""FAISS inner-product index over normalised vectors, keyed by stable int64 ids."""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Collection
from dataclasses import dataclass

import faiss
import numpy as np

from prefrank.errors import IndexCorruptError

logger = logging.getLogger(__name__)

SNAPSHOT_POINTER = "index.json"
# Below this many allowed ids, a filtered HNSW search scores the allowed vectors exactly: a graph
# walk restricted by a selector can miss matches when the filter keeps few vectors.
EXACT_FILTER_LIMIT = 20_000


@dataclass(frozen=True)
class IndexSpec:
    """Shape and type of a vector index."""

    dimension: int
    index_type: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128


class VectorIndex:
    """An ``IndexIDMap2`` over ``IndexFlatIP`` (exact) or ``IndexHNSWFlat`` (approximate).

    Vectors must be L2-normalised, so inner product equals cosine similarity. Not thread-safe:
    the caller serialises writes against reads.
    """

    def __init__(self, spec: IndexSpec, index: faiss.Index | None = None) -> None:
        self.spec = spec
        self._index = index if index is not None else self._empty(spec)

    @staticmethod
    def _empty(spec: IndexSpec) -> faiss.Index:
        if spec.index_type == "hnsw":
            base = faiss.IndexHNSWFlat(spec.dimension, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = spec.hnsw_ef_construction
        else:
            base = faiss.IndexFlatIP(spec.dimension)
        return faiss.IndexIDMap2(base)

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def supports_remove(self) -> bool:
        """False for HNSW: FAISS cannot delete from a graph, so the caller rebuilds instead."""
        return self.spec.index_type != "hnsw"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors of shape (n, dimension) under int64 ids of shape (n,)."""
        self._check_vectors(vectors)
        if ids.shape != (vectors.shape[0],):
            raise ValueError(f"expected {vectors.shape[0]} ids, got shape {ids.shape}")
        if len(ids):
            self._index.add_with_ids(vectors, ids.astype(np.int64))

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids and return how many were present. Flat indexes only."""
        if not self.supports_remove:
            raise NotImplementedError("HNSW indexes do not support removal; rebuild instead")
        return int(self._index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: Collection[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the k best (scores, ids) per query, each of shape (n_queries, k').

        k' = min(k, number of searchable vectors). With allowed_ids, only those ids are searched.
        Rows are sorted by descending score and ids are int64. An id of -1 marks padding when an
        approximate search of several queries finds fewer than k' hits for some of them.
        """
        self._check_vectors(queries)
        limit = self.size if allowed_ids is None else min(self.size, len(allowed_ids))
        k = min(k, limit)
        if k <= 0:
            empty = np.zeros((queries.shape[0], 0))
            return empty.astype(np.float32), empty.astype(np.int64)

        if allowed_ids is None:
            params = self._params(None)
        else:
            allowed = np.fromiter(allowed_ids, dtype=np.int64, count=len(allowed_ids))
            if self.spec.index_type == "hnsw" and len(allowed) <= EXACT_FILTER_LIMIT:
                return self._exact_subset(queries, k, allowed)
            params = self._params(faiss.IDSelectorBatch(allowed))
        scores, ids = self._index.search(queries, k, params=params)

        # Approximate search can return fewer than k hits, padded with id -1. A single query's
        # row is trimmed; rows of a multi-query search keep the padding.
        if queries.shape[0] == 1:
            keep = ids[0] >= 0
            scores, ids = scores[:, keep], ids[:, keep]
        return scores, ids

    def _params(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        if self.spec.index_type == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=self.spec.hnsw_ef_search, sel=selector)
        return faiss.SearchParameters(sel=selector)

    def _exact_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.vstack([self._index.reconstruct(int(i)) for i in allowed])
        scores = queries @ vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), allowed[order]

    def _check_vectors(self, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.spec.dimension or vectors.dtype != np.float32:
            raise ValueError(
                f"expected float32 vectors of shape (n, {self.spec.dimension}), "
                f"got {vectors.dtype} {vectors.shape}"
            )

    # --- persistence ---

    def save(self, directory: pathlib.Path, generation: int) -> None:
        """Write a snapshot tagged with the document store's generation, atomically.

        The FAISS file gets a generation-specific name and is fsynced before the small JSON
        pointer is replaced, so a crash at any point leaves the previous snapshot loadable.
        """
        directory.mkdir(parents=True, exist_ok=True)
        name = f"index-{generation}.faiss"
        _atomic_write(directory / name, faiss.serialize_index(self._index).tobytes())
        pointer = {"file": name, "generation": generation, "size": self.size,
                   "dimension": self.spec.dimension, "index_type": self.spec.index_type}
        _atomic_write(directory / SNAPSHOT_POINTER, json.dumps(pointer).encode())
        for old in directory.glob("index-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)
        logger.debug("Saved FAISS snapshot %s (%d vectors)", name, self.size)

    @classmethod
    def load(cls, directory: pathlib.Path, spec: IndexSpec) -> tuple[VectorIndex, int] | None:
        """Load the snapshot in directory; return (index, generation), or None when there is none.

        A snapshot of another dimension or index type than spec also returns None, so the
        caller rebuilds it from the document store.

        Raises:
            IndexCorruptError: the pointer exists but the snapshot does not load.
        """
        pointer_path = directory / SNAPSHOT_POINTER
        if not pointer_path.exists():
            return None
        try:
            pointer = json.loads(pointer_path.read_text())
            if pointer["dimension"] != spec.dimension or pointer["index_type"] != spec.index_type:
                logger.warning(
                    "FAISS snapshot is %s/%d but the settings ask for %s/%d; rebuilding it",
                    pointer["index_type"], pointer["dimension"], spec.index_type, spec.dimension,
                )
                return None
            data = np.fromfile(directory / pointer["file"], dtype=np.uint8)
            index = faiss.deserialize_index(data)
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            raise IndexCorruptError(f"FAISS snapshot in {directory} does not load: {err}") from err
        return cls(spec, index), int(pointer["generation"])


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
