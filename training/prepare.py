"""Turn loaded preference data into train/dev/test pairs, with a report of every row dropped and why.

The steps, in order: Unicode NFC and whitespace normalisation, then empty and over-long rows are
dropped. Contradictory pairs are resolved by majority or dropped, and exact duplicates dropped.
Graded lists are paired inside each query group where the score gap exceeds ``min_score_gap``,
and ties are counted but never used. Last comes a deterministic split by query group (salted
sha1 of the group key), so no group is on two sides.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.loaders import GRADED_COLUMNS, PAIR_COLUMNS, LoadedData
from training.recipe import PrepareConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass
class PreparedData:
    """Pairs per split, the dev and test splits' graded lists (graded sources only) and the report."""

    pairs: dict[str, pd.DataFrame]
    test_lists: pd.DataFrame | None
    report: dict[str, Any] = field(default_factory=dict)
    dev_lists: pd.DataFrame | None = None


def normalise_text(text: str) -> str:
    """Apply Unicode NFC, turn runs of spaces/tabs into one space, keep at most one blank line, strip."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _INLINE_SPACE.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def split_of(group: str, fractions: tuple[float, float], seed: str) -> str:
    """Return 'train', 'dev' or 'test' for a query group; depends only on (seed, group).

    Args:
        group: The group key.
        fractions: (dev_fraction, test_fraction).
        seed: Salt of the hash.
    """
    unit = int(hashlib.sha1(f"{seed}:{group}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    dev_fraction, test_fraction = fractions
    if unit < test_fraction:
        return "test"
    return "dev" if unit < test_fraction + dev_fraction else "train"


def assign_splits(groups: pd.Series, fractions: tuple[float, float], seed: str) -> pd.Series:
    """Map each row's group to its split (computed once per distinct group)."""
    lookup = {group: split_of(group, fractions, seed) for group in pd.unique(groups)}
    return groups.map(lookup)


def _clean(frame: pd.DataFrame, text_columns: dict[str, int], dropped: Counter) -> pd.DataFrame:
    """Normalise text columns, then drop rows with an empty or over-long text (counted per reason)."""
    frame = frame.copy()
    for column in text_columns:
        frame[column] = frame[column].astype(str).map(normalise_text)
    keep = np.ones(len(frame), dtype=bool)
    for column, limit in text_columns.items():
        empty = (frame[column].str.len() == 0).to_numpy() & keep
        dropped[f"empty {column}"] += int(empty.sum())
        keep &= ~empty
        long = (frame[column].str.len() > limit).to_numpy() & keep
        dropped[f"{column} over {limit} characters"] += int(long.sum())
        keep &= ~long
    return frame[keep].reset_index(drop=True)


def resolve_contradictions(pairs: pd.DataFrame, policy: str, dropped: Counter) -> pd.DataFrame:
    """Resolve a > b and b > a judged for one query: the majority direction wins, or both go ('drop').

    Every row counts as one vote, duplicates included; a tied vote drops every row of that pair.
    """
    forward = pairs["chosen"] < pairs["rejected"]
    low = pairs["chosen"].where(forward, pairs["rejected"])
    high = pairs["rejected"].where(forward, pairs["chosen"])
    keys = pd.DataFrame({"group": pairs["group"], "query": pairs["query"], "low": low, "high": high,
                         "forward": forward})
    votes = keys.groupby(["group", "query", "low", "high"], sort=False)["forward"].agg(["sum", "count"])
    votes = votes.rename(columns={"sum": "forward_votes", "count": "votes"})
    merged = keys.join(votes, on=["group", "query", "low", "high"])
    backward_votes = merged["votes"] - merged["forward_votes"]
    contradicted = (merged["forward_votes"] > 0) & (backward_votes > 0)
    if policy == "majority":
        majority_forward = merged["forward_votes"] > backward_votes
        tied = contradicted & (merged["forward_votes"] == backward_votes)
        outvoted = contradicted & ~tied & (merged["forward"] != majority_forward)
        dropped["contradiction without majority"] += int(tied.sum())
        dropped["contradiction outvoted"] += int(outvoted.sum())
        keep = ~(tied | outvoted)
    else:
        dropped["contradiction dropped"] += int(contradicted.sum())
        keep = ~contradicted
    return pairs[keep.to_numpy()].reset_index(drop=True)


def prepare_pairs(pairs: pd.DataFrame, config: PrepareConfig, dropped: Counter) -> pd.DataFrame:
    """Clean a canonical pairs frame: normalise, drop empty/over-long, ties, contradictions, duplicates."""
    pairs = _clean(pairs, {"query": config.max_query_chars, "chosen": config.max_candidate_chars,
                           "rejected": config.max_candidate_chars}, dropped)
    same = (pairs["chosen"] == pairs["rejected"]).to_numpy()
    dropped["chosen equals rejected"] += int(same.sum())
    pairs = pairs[~same]
    pairs = resolve_contradictions(pairs, config.contradictions, dropped)
    duplicate = pairs.duplicated(["group", "query", "chosen", "rejected"]).to_numpy()
    dropped["exact duplicate"] += int(duplicate.sum())
    return pairs[~duplicate].reset_index(drop=True)


def graded_to_pairs(graded: pd.DataFrame, config: PrepareConfig, dropped: Counter, ties: Counter
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean a graded frame and pair candidates of one (group, query) whose score gap exceeds the threshold.

    Returns:
        (pairs, cleaned graded rows). Pair margins are the score gaps. Equal scores are counted in
        ``ties`` under 'tied pairs' and gaps in (0, min_score_gap] under 'gap at or below threshold'.
    """
    graded = _clean(graded, {"query": config.max_query_chars, "candidate": config.max_candidate_chars}, dropped)
    duplicate = graded.duplicated(["group", "query", "candidate", "score"]).to_numpy()
    dropped["exact duplicate"] += int(duplicate.sum())
    graded = graded[~duplicate]

    # One text judged twice with different scores (identical outputs of two systems, two raters):
    # both judgements are evidence, so keep one row with their mean score.
    keys = ["group", "query", "candidate"]
    repeated = graded.duplicated(keys).to_numpy()
    dropped["candidate scored twice (scores averaged)"] += int(repeated.sum())
    graded = graded.groupby(keys, sort=False, as_index=False)["score"].mean()

    parts = []
    for (group, query), rows in graded.groupby(["group", "query"], sort=False):
        if len(rows) < 2:
            continue
        scores = rows["score"].to_numpy()
        first, second = np.triu_indices(len(rows), k=1)
        gaps = np.abs(scores[first] - scores[second])
        ties["tied pairs"] += int((gaps == 0).sum())
        ties["gap at or below threshold"] += int(((gaps > 0) & (gaps <= config.min_score_gap)).sum())
        keep = gaps > config.min_score_gap
        first, second = first[keep], second[keep]
        better = scores[first] > scores[second]
        winners = np.where(better, first, second)
        losers = np.where(better, second, first)
        candidates = rows["candidate"].to_numpy()
        parts.append(pd.DataFrame({"group": group, "query": query, "chosen": candidates[winners],
                                   "rejected": candidates[losers], "margin": gaps[keep], "weight": 1.0}))
    pairs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(PAIR_COLUMNS))
    return pairs[list(PAIR_COLUMNS)], graded[list(GRADED_COLUMNS)]


def _sample(frame: pd.DataFrame, limit: int, seed: str, reason: str, dropped: Counter) -> pd.DataFrame:
    if limit <= 0 or len(frame) <= limit:
        return frame
    dropped[reason] += len(frame) - limit
    state = int(hashlib.sha1(seed.encode()).hexdigest()[:8], 16)
    return frame.sample(n=limit, random_state=state).sort_index().reset_index(drop=True)


def _cap_per_group(pairs: pd.DataFrame, limit: int, seed: str, dropped: Counter) -> pd.DataFrame:
    if limit <= 0:
        return pairs
    order = np.random.default_rng(int(hashlib.sha1(seed.encode()).hexdigest()[:8], 16)).permutation(len(pairs))
    shuffled = pairs.iloc[order]
    rank = shuffled.groupby("group", sort=False).cumcount().to_numpy()
    dropped["over max_pairs_per_group"] += int((rank >= limit).sum())
    return shuffled[rank < limit].sort_index().reset_index(drop=True)


def prepare(loaded: LoadedData, config: PrepareConfig) -> PreparedData:
    """Run every preparation step on one loaded source and build the report (without [UNK] rates).

    Returns:
        PreparedData with ``pairs[split]`` frames (``PAIR_COLUMNS``) and, for graded sources, the
        dev and test splits' cleaned graded rows (rank correlation, calibration, ranking metrics).
    """
    dropped: Counter = Counter()
    ties: Counter = Counter()
    rows_in = len(loaded.frame)

    # Clean and build pairs.
    graded = None
    if loaded.kind == "pairs":
        pairs = prepare_pairs(loaded.frame, config, dropped)
    else:
        pairs, graded = graded_to_pairs(loaded.frame, config, dropped, ties)
    pairs = _cap_per_group(pairs, config.max_pairs_per_group, config.split_seed, dropped)

    # Split by query group, then cap split sizes.
    fractions = (config.dev_fraction, config.test_fraction)
    split = assign_splits(pairs["group"], fractions, config.split_seed)
    out = {name: pairs[(split == name).to_numpy()].reset_index(drop=True) for name in SPLITS}
    out["train"] = _sample(out["train"], config.max_pairs, config.split_seed, "train over max_pairs", dropped)
    out["dev"] = _sample(out["dev"], config.max_dev_pairs, config.split_seed, "dev over max_dev_pairs", dropped)
    out["test"] = _sample(out["test"], config.max_test_pairs, config.split_seed, "test over max_test_pairs", dropped)
    test_lists = dev_lists = None
    if graded is not None:
        graded_split = assign_splits(graded["group"], fractions, config.split_seed).to_numpy()
        test_lists = graded[graded_split == "test"].reset_index(drop=True)
        dev_lists = graded[graded_split == "dev"].reset_index(drop=True)

    report = {
        "source_kind": loaded.kind,
        "rows_in": rows_in,
        "loader_notes": dict(loaded.notes),
        "dropped": {reason: count for reason, count in sorted(dropped.items()) if count},
        "ties_not_used": dict(ties),
        "pairs_out": {name: len(frame) for name, frame in out.items()},
        "groups_out": {name: int(frame["group"].nunique()) for name, frame in out.items()},
    }
    logger.info("Prepared %d rows into pairs train/dev/test = %d/%d/%d", rows_in, *report["pairs_out"].values())
    return PreparedData(out, test_lists, report, dev_lists)
