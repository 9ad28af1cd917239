"""Retrieve, score and order: the one code path behind Rerank, Search and batch scoring."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefrank import validation
from prefrank.config import ServerConfig
from prefrank.retrieval.encoder import BiEncoder
from prefrank.retrieval.index import DocumentIndex, RetrievedDocument
from prefrank.scoring.base import Scorer
from prefrank.scoring.cosine import CosineScorer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One candidate to rerank, as the caller sent it."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    first_stage_score: float | None = None


@dataclass(frozen=True)
class RankedCandidate:
    """A scored candidate: ``index`` is its 0-based position in the request."""

    candidate: Candidate
    index: int
    score: float
    relevance_score: float
    truncated: bool


@dataclass(frozen=True)
class RerankOutcome:
    results: list[RankedCandidate]
    truncated_indices: list[int]
    scorer: str
    model_version: str


@dataclass(frozen=True)
class SearchHit:
    """A reranked search result with the retriever's cosine and 1-based rank before reranking."""

    retrieved: RetrievedDocument
    score: float
    relevance_score: float
    truncated: bool


@dataclass(frozen=True)
class SearchOutcome:
    results: list[SearchHit]
    retrieved: int
    scorer: str
    model_version: str


def order_by_score(scores: np.ndarray) -> np.ndarray:
    """Return indices that sort scores descending; equal scores keep their input order."""
    return np.argsort(-np.asarray(scores), kind="stable")


class Ranker:
    """Validates requests, scores candidates and orders them.

    Args:
        config: Request limits and search defaults.
        encoder: The bi-encoder that embeds search queries.
        scorer: The second-stage scorer (cross-encoder or retriever cosine).
        index: The document index that Search retrieves from.
    """

    def __init__(self, config: ServerConfig, encoder: BiEncoder, scorer: Scorer, index: DocumentIndex) -> None:
        self._config = config
        self._encoder = encoder
        self.scorer = scorer
        self.index = index

    def rerank(self, query: str, candidates: Sequence[Candidate], top_n: int = 0) -> RerankOutcome:
        """Score candidates against the query and return the best top_n (0 = all), best first.

        Raises:
            InvalidArgumentError: empty query, no or too many candidates, duplicate or empty ids,
                empty or over-long text, negative top_n, non-finite first-stage scores.
        """
        # Validate
        limits = self._config
        validation.check_text("query", query, limits.max_text_chars)
        validation.check_count("candidates", len(candidates), limits.max_candidates, "candidate")
        validation.check_unique_ids("candidates", [c.id for c in candidates])
        for position, candidate in enumerate(candidates):
            validation.check_text(f"candidates[{position}].text", candidate.text, limits.max_text_chars)
            validation.check_score(f"candidates[{position}].first_stage_score", candidate.first_stage_score)
        validation.check_non_negative("top_n", top_n)

        # Score and order
        batch = self.scorer.score(query, [c.text for c in candidates])
        relevance = self.scorer.relevance(batch.scores)
        order = order_by_score(batch.scores)
        if top_n:
            order = order[:top_n]
        results = [
            RankedCandidate(candidates[i], int(i), float(batch.scores[i]), float(relevance[i]), batch.truncated[i])
            for i in order
        ]
        truncated = [i for i, cut in enumerate(batch.truncated) if cut]
        return RerankOutcome(results, truncated, self.scorer.kind, self.scorer.description.version)

    def search(
        self, query: str, top_k: int = 0, top_n: int = 0, filters: Mapping[str, Any] | None = None
    ) -> SearchOutcome:
        """Retrieve top_k documents, rerank them and return the best top_n.

        Args:
            top_k: Retrieval depth; 0 uses ``search_top_k``.
            top_n: Results to return; 0 uses ``search_top_n``.
            filters: Metadata equality filters.

        Raises:
            InvalidArgumentError: empty or over-long query, negative or over-limit top_k or top_n,
                unsupported filter value types.
        """
        # Validate
        limits = self._config
        validation.check_text("query", query, limits.max_text_chars)
        validation.check_non_negative("top_k", top_k, limits.max_candidates)
        validation.check_non_negative("top_n", top_n, limits.max_candidates)
        validation.check_filters(filters or {})
        top_k = top_k or limits.search_top_k
        top_n = top_n or limits.search_top_n

        # Retrieve
        query_vector = self._encoder.encode([query])[0]
        retrieved = self.index.search(query_vector, top_k, filters)
        if not retrieved:
            return SearchOutcome([], 0, self.scorer.kind, self.scorer.description.version)

        # Rerank: the cosine scorer reuses the retrieval scores instead of embedding again.
        if isinstance(self.scorer, CosineScorer):
            scores = np.array([r.score for r in retrieved], dtype=np.float64)
            truncated = [r.document.truncated for r in retrieved]
        else:
            batch = self.scorer.score(query, [r.document.content for r in retrieved])
            scores, truncated = batch.scores, batch.truncated
        relevance = self.scorer.relevance(scores)
        hits = [
            SearchHit(retrieved[i], float(scores[i]), float(relevance[i]), truncated[i])
            for i in order_by_score(scores)[:top_n]
        ]
        return SearchOutcome(hits, len(retrieved), self.scorer.kind, self.scorer.description.version)
