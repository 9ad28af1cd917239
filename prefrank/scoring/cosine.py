"""Scoring by the retriever's cosine similarity: the fallback when no reward model is configured."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prefrank.retrieval.encoder import BiEncoder, ModelDescription
from prefrank.scoring.base import ScoreBatch, Scorer


class CosineScorer(Scorer):
    """Scores texts by the cosine similarity of their bi-encoder embeddings to the query's.

    ``relevance`` is (cosine + 1) / 2, a fixed monotone map of [-1, 1] onto [0, 1].
    """

    kind = "retriever-cosine"

    def __init__(self, encoder: BiEncoder) -> None:
        self._encoder = encoder

    @property
    def description(self) -> ModelDescription:
        return self._encoder.description

    def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> ScoreBatch:
        vectors = self._encoder.encode([query, *texts])
        scores = (vectors[1:] @ vectors[0]).astype(np.float64)
        return ScoreBatch(np.clip(scores, -1.0, 1.0), self._encoder.truncated(texts))

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(scores, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
