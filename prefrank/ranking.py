"""Retrieve, score and order: the one code path behind Rerank, Search and batch scoring."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefrank import validation
from prefrank.config import ServerConfig
from prefrank.errors import ConfigError, InvalidArgumentError
from prefrank.retrieval.encoder import BiEncoder
from prefrank.retrieval.index import DocumentIndex, RetrievedDocument
from prefrank.scoring.base import Scorer
from prefrank.scoring.cosine import CosineScorer
from prefrank.scoring.fusion import FusionModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One candidate to rerank, as the caller sent it."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    first_stage_score: float | None = None


@dataclass(frozen=True)
class ScoreComponents:
    """The parts of one result's score, returned on request to explain a ranking.

    Attributes:
        retriever_score: Retriever cosine in [-1, 1].
        reward_score: Reward model logit; None when no reward model is loaded.
        fused_score: The score results are ordered by: the fused score when a bundle's fusion is
            loaded, otherwise the active scorer's raw score.
        relevance: The relevance in [0, 1] derived from fused_score.
    """

    retriever_score: float
    reward_score: float | None
    fused_score: float
    relevance: float


@dataclass(frozen=True)
class RankedCandidate:
    """A scored candidate: ``index`` is its 0-based position in the request."""

    candidate: Candidate
    index: int
    score: float
    relevance_score: float
    truncated: bool
    components: ScoreComponents | None = None


@dataclass(frozen=True)
class RerankOutcome:
    results: list[RankedCandidate]
    truncated_indices: list[int]
    scorer: str
    model_version: str
    bundle_version: str = ""


@dataclass(frozen=True)
class SearchHit:
    """A reranked search result with the retriever's cosine and 1-based rank before reranking."""

    retrieved: RetrievedDocument
    score: float
    relevance_score: float
    truncated: bool
    components: ScoreComponents | None = None


@dataclass(frozen=True)
class SearchOutcome:
    results: list[SearchHit]
    retrieved: int
    scorer: str
    model_version: str
    bundle_version: str = ""


def order_by_score(scores: np.ndarray) -> np.ndarray:
    """Return indices that sort scores descending; equal scores keep their input order."""
    return np.argsort(-np.asarray(scores), kind="stable")


class Ranker:
    """Validates requests, scores candidates and orders them.

    Args:
        config: Request limits and search defaults.
        encoder: The bi-encoder that embeds search queries.
        scorer: The second-stage scorer (cross-encoder or retriever cosine).
        index: The document index that Search retrieves from; None builds a rerank-only Ranker
            (the batch scorer), whose ``search`` raises ConfigError.
        fusion: Score fusion and calibration from a model bundle. When set, results are ordered
            by the fused score and relevance is its calibrated value. When None, results are
            ordered by the scorer's raw score and relevance is the scorer's fixed map.
        bundle_version: Version of the model bundle the models came from; empty without one.

    Raises:
        ConfigError: the fusion weights need a reward model but the scorer is the retriever cosine.
    """

    def __init__(
        self,
        config: ServerConfig,
        encoder: BiEncoder,
        scorer: Scorer,
        index: DocumentIndex | None,
        fusion: FusionModel | None = None,
        bundle_version: str = "",
    ) -> None:
        if fusion is not None and fusion.needs_reward and isinstance(scorer, CosineScorer):
            raise ConfigError(
                f"the fusion of bundle {bundle_version or '(none)'} weights the reward score by "
                f"{fusion.reward_weight}, but no reward model is loaded; configure a reward model"
            )
        self._config = config
        self._encoder = encoder
        self._cosine = CosineScorer(encoder)
        self.scorer = scorer
        self.index = index
        self.fusion = fusion
        self.bundle_version = bundle_version

    @property
    def scorer_name(self) -> str:
        """What ordered the results: "fusion" with a bundle's fusion, otherwise the scorer's kind."""
        return "fusion" if self.fusion is not None else self.scorer.kind

    @property
    def encoder(self) -> BiEncoder:
        """The bi-encoder that embeds search queries (and scores, when the scorer is the cosine)."""
        return self._encoder

    def rerank(
        self,
        query: str,
        candidates: Sequence[Candidate],
        top_n: int = 0,
        deadline: float | None = None,
        return_components: bool = False,
    ) -> RerankOutcome:
        """Score candidates against the query and return the best top_n (0 = all), best first.

        Args:
            deadline: ``time.monotonic()`` value after which scoring is abandoned.
            return_components: Attach each result's ScoreComponents. The retriever cosine is
                computed only when this is set or the fusion weights need it.

        Raises:
            InvalidArgumentError: empty query, no or too many candidates, duplicate or empty ids,
                empty or over-long text, negative top_n, non-finite first-stage scores, or
                first-stage scores on only some candidates when the fusion weights use them.
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

        first_stage = self._first_stage_scores(candidates)

        # Score, fuse and order
        texts = [c.text for c in candidates]
        batch = self.scorer.score(query, texts, deadline)
        if isinstance(self.scorer, CosineScorer):
            reward, retriever = None, batch.scores
        else:
            reward, retriever = batch.scores, None
            if return_components or (self.fusion is not None and self.fusion.needs_retriever):
                retriever = self._cosine.score(query, texts, deadline).scores
        scores, relevance = self._fuse(batch.scores, reward, retriever, first_stage)
        order = order_by_score(scores)
        if top_n:
            order = order[:top_n]
        results = [
            RankedCandidate(
                candidates[i], int(i), float(scores[i]), float(relevance[i]), batch.truncated[i],
                _components(i, retriever, reward, scores, relevance) if return_components else None,
            )
            for i in order
        ]
        truncated = [i for i, cut in enumerate(batch.truncated) if cut]
        return RerankOutcome(
            results, truncated, self.scorer_name, self.scorer.description.version, self.bundle_version
        )

    def _first_stage_scores(self, candidates: Sequence[Candidate]) -> np.ndarray | None:
        """Return the candidates' first-stage scores when the fusion uses them and all have one."""
        if self.fusion is None or not self.fusion.needs_first_stage:
            return None
        missing = [i for i, c in enumerate(candidates) if c.first_stage_score is None]
        if len(missing) == len(candidates):
            return None
        if missing:
            raise InvalidArgumentError(
                f"candidates[{missing[0]}].first_stage_score is missing, but {len(candidates) - len(missing)} "
                "other candidates have one; the loaded score fusion weights first-stage scores, so send "
                "them for every candidate or for none"
            )
        return np.array([c.first_stage_score for c in candidates], dtype=np.float64)

    def _fuse(
        self,
        raw: np.ndarray,
        reward: np.ndarray | None,
        retriever: np.ndarray | None,
        first_stage: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (scores to order by, relevance in [0, 1]) from the fusion, or from the scorer without one."""
        if self.fusion is None:
            return np.asarray(raw, dtype=np.float64), self.scorer.relevance(raw)
        fused = self.fusion.fuse(reward, retriever, first_stage)
        return fused, self.fusion.relevance(fused)

    def search(
        self,
        query: str,
        top_k: int = 0,
        top_n: int = 0,
        filters: Mapping[str, Any] | None = None,
        deadline: float | None = None,
        return_components: bool = False,
    ) -> SearchOutcome:
        """Retrieve top_k documents, rerank them and return the best top_n.

        Args:
            top_k: Retrieval depth; 0 uses ``search_top_k``.
            top_n: Results to return; 0 uses ``search_top_n``.
            filters: Metadata equality filters.
            return_components: Attach each result's ScoreComponents.

        Raises:
            InvalidArgumentError: empty or over-long query, negative or over-limit top_k or top_n,
                unsupported filter value types.
            ConfigError: the Ranker was built without an index (rerank only).
        """
        if self.index is None:
            raise ConfigError("search needs a document index, but this Ranker was built for rerank only; "
                              "load it with prefrank.runtime.load_runtime instead of load_ranker")
        # Validate
        limits = self._config
        validation.check_text("query", query, limits.max_text_chars)
        validation.check_non_negative("top_k", top_k, limits.max_candidates)
        validation.check_non_negative("top_n", top_n, limits.max_candidates)
        validation.check_filters(filters or {})
        top_k = top_k or limits.search_top_k
        top_n = top_n or limits.search_top_n

        # Retrieve
        query_vector = self._encoder.encode_cached([query])[0]
        retrieved = self.index.search(query_vector, top_k, filters)
        if not retrieved:
            return SearchOutcome([], 0, self.scorer_name, self.scorer.description.version, self.bundle_version)

        # Rerank: the cosine scorer reuses the retrieval scores instead of embedding again.
        retriever = np.array([r.score for r in retrieved], dtype=np.float64)
        if isinstance(self.scorer, CosineScorer):
            raw, reward = retriever, None
            truncated = [r.document.truncated for r in retrieved]
        else:
            batch = self.scorer.score(query, [r.document.content for r in retrieved], deadline)
            raw, reward, truncated = batch.scores, batch.scores, batch.truncated
        scores, relevance = self._fuse(raw, reward, retriever, None)
        hits = [
            SearchHit(
                retrieved[i], float(scores[i]), float(relevance[i]), truncated[i],
                _components(i, retriever, reward, scores, relevance) if return_components else None,
            )
            for i in order_by_score(scores)[:top_n]
        ]
        return SearchOutcome(
            hits, len(retrieved), self.scorer_name, self.scorer.description.version, self.bundle_version
        )


def _components(
    i: int, retriever: np.ndarray | None, reward: np.ndarray | None, scores: np.ndarray, relevance: np.ndarray
) -> ScoreComponents:
    if retriever is None:
        raise ValueError("components need the retriever cosine, which was not computed")
    return ScoreComponents(
        retriever_score=float(retriever[i]),
        reward_score=None if reward is None else float(reward[i]),
        fused_score=float(scores[i]),
        relevance=float(relevance[i]),
    )
