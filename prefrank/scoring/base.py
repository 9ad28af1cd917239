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
    def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> ScoreBatch:
        """Score each text against the query.

        Args:
            deadline: ``time.monotonic()`` value after which the work is abandoned.

        Raises:
            DeadlineExceededError: the deadline passed first.
            ResourceExhaustedError: the scorer's queue is full.
        """

    @abc.abstractmethod
    def relevance(self, scores: np.ndarray) -> np.ndarray:
        """Map raw scores monotonically into [0, 1]."""

    def close(self) -> None:  # noqa: B027 - optional hook; most scorers hold no threads
        """Release worker threads; the scorer must not be used afterwards."""
