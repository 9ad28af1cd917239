"""The sentence-transformers bi-encoder that embeds queries and documents."""

from __future__ import annotations

import logging
import pathlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prefrank.artifacts import model_version, resolve_model_dir
from prefrank.errors import ModelLoadError

logger = logging.getLogger(__name__)

# Embeddings of this many recent texts are kept (384 floats each for MiniLM, about 15 MB).
# NOTE: an embedding's last float bits depend on the padding of the batch it was computed in.
# So only single-text calls (search queries) use the cache, and scores stay identical across processes.
EMBEDDING_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class ModelDescription:
    """Description of one loaded model, as GetInfo reports it."""

    name: str
    version: str
    path: str
    embedding_dim: int
    max_length: int
    backend: str = "fp32"
    parity: str = ""


class BiEncoder:
    """A sentence-transformers bi-encoder loaded from a local directory.

    Embeddings are L2-normalised, so their inner product is the cosine similarity.

    Args:
        path: A sentence-transformers model directory (never a hub id: nothing is downloaded).
        device: torch device.
        batch_size: Texts per forward pass.

    Example:
        >>> encoder = BiEncoder(bundled_retriever_path())
        >>> encoder.encode(["a query"]).shape
        (1, 384)
    """

    def __init__(self, path: str | pathlib.Path, device: str = "cpu", batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        directory = resolve_model_dir(path, "retriever_model")
        try:
            self._model = SentenceTransformer(str(directory), device=device, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelLoadError(f"retriever_model: {directory} did not load: {err}") from err
        self._model.eval()
        self._batch_size = batch_size
        # NOTE: one forward pass at a time. torch already uses every core for one batch, and
        # concurrent passes would only oversubscribe the threads.
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.description = ModelDescription(
            name=directory.name if directory.name != "model" else directory.parent.name,
            version=model_version(directory),
            path=str(directory),
            embedding_dim=int(self._model.get_embedding_dimension()),
            max_length=int(self._model.max_seq_length),
        )
        logger.info(
            "Loaded retriever %s (version %s, dim %d, max length %d) from %s",
            self.description.name, self.description.version, self.description.embedding_dim,
            self.description.max_length, directory,
        )

    @property
    def dimension(self) -> int:
        return self.description.embedding_dim

    def encode(self, texts: Sequence[str], show_progress_bar: bool = False) -> np.ndarray:
        """Embed texts.

        Returns:
            float32 array of shape (len(texts), dimension), each row of unit L2 norm.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress_bar,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_cached(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts like ``encode``, reusing embeddings of recently seen texts (LRU)."""
        with self._cache_lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
            for text in found:
                self._cache.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            fresh = dict(zip(missing, self.encode(missing), strict=True))
            found.update(fresh)
            with self._cache_lock:
                self._cache.update(fresh)
                while len(self._cache) > EMBEDDING_CACHE_SIZE:
                    self._cache.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.vstack([found[t] for t in texts])

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Return for each text whether it exceeds the max length and is cut when embedded."""
        if not texts:
            return []
        # The lock that serialises encode: the fast tokenizer's padding and truncation settings
        # are shared state, and changing them during an encode breaks that batch.
        with self._lock:
            encoded = self._model.tokenizer(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) > self.description.max_length for ids in encoded["input_ids"]]


def load_bi_encoder(path: str | pathlib.Path, device: str, batch_size: int) -> BiEncoder:
    """Load a bi-encoder, wrapping unexpected loader failures in ModelLoadError."""
    try:
        return BiEncoder(path, device=device, batch_size=batch_size)
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001 - any loader failure must become a clear start-up error
        raise ModelLoadError(f"retriever_model: {path} did not load: {err}") from err
