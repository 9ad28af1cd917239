"""Score one query group through Ranker.rerank, the code path behind the Rerank RPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prefrank.batch.grouping import Group, Reject
from prefrank.batch.io import SCORE_COLUMNS
from prefrank.errors import InvalidArgumentError
from prefrank.ranking import Candidate, Ranker, order_by_score


@dataclass(frozen=True)
class GroupScores:
    """Per row of a group, in input order: raw score, relevance in [0, 1] and 1-based rank."""

    scores: np.ndarray
    relevance: np.ndarray
    ranks: np.ndarray


def score_candidates(
    ranker: Ranker, query: str, ids: Sequence[str], texts: Sequence[str], max_candidates: int
) -> GroupScores:
    """Score one query's candidates with ``ranker.rerank`` and rank them, best first.

    A group larger than max_candidates is sent in consecutive slices of max_candidates, exactly
    as a caller of the Rerank RPC must split it, and ranked over the whole group afterwards.

    Raises:
        InvalidArgumentError: rerank rejected the request.
    """
    count = len(texts)
    scores = np.empty(count, dtype=np.float64)
    relevance = np.empty(count, dtype=np.float64)
    for start in range(0, count, max_candidates):
        stop = min(start + max_candidates, count)
        candidates = [Candidate(id=ids[i], text=texts[i]) for i in range(start, stop)]
        outcome = ranker.rerank(query, candidates)
        for result in outcome.results:
            scores[start + result.index] = result.score
            relevance[start + result.index] = result.relevance_score
    ranks = np.empty(count, dtype=np.int64)
    ranks[order_by_score(scores)] = np.arange(1, count + 1)
    return GroupScores(scores, relevance, ranks)


def score_group(
    ranker: Ranker, group: Group, max_candidates: int
) -> tuple[list[dict[str, Any]], list[Reject]]:
    """Return the group's output rows (input values plus score columns), or rejects if rerank failed."""
    try:
        result = score_candidates(ranker, group.query, group.ids, group.texts, max_candidates)
    except InvalidArgumentError as err:
        reason = f"rerank rejected the query group: {err.message}"
        return [], [Reject(row.ordinal, row.line, "rerank error", reason, row.values) for row in group.rows]
    return [
        scored_row(row.values or {}, result.scores[i], result.relevance[i], result.ranks[i])
        for i, row in enumerate(group.rows)
    ], []


def scored_row(values: dict[str, Any], score: float, relevance: float, rank: int) -> dict[str, Any]:
    """Return a copy of the row's values with score, relevance_score and rank set."""
    row = {k: v for k, v in values.items() if k not in SCORE_COLUMNS}
    row["score"] = float(score)
    row["relevance_score"] = float(relevance)
    row["rank"] = int(rank)
    return row
