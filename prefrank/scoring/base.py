"""The scorer interface shared by the service, search and the batch scorer."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prefrank.retrieval.encoder import ModelDescription


@dataclass(frozen=True)
class ScoreBatch:
    """Scores for one query against several texts.

    Attributes:
        scores: float64 array of shape (n,), higher is better.
        truncated: Per text, whether the model input was cut to the max length.
    """

    scores: np.ndarray
    truncated: list[bool]


class Scorer(abc.ABC):
    """Scores query-text pairs. Implementations must be safe to call from several threads."""

    #: Name reported to callers: "cross-encoder" or "retriever-cosine".
    kind: str

    @property
    @abc.abstractmethod
    def description(self) -> ModelDescription:
        """The model that produces the scores."""

    @abc.abstractmethod
    def score(self, query: str, texts: Sequence[str]) -> ScoreBatch:
        """Score each text against the query."""

    @abc.abstractmethod
    def relevance(self, scores: np.ndarray) -> np.ndarray:
        """Map raw scores monotonically into [0, 1]."""
