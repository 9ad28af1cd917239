"""Preparation of preference data: normalisation, contradictions, ties, the split by query group, recipes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefrank.errors import ConfigError
from training.loaders import GRADED_COLUMNS, PAIR_COLUMNS, LoadedData
from training.prepare import (
    assign_splits,
    graded_to_pairs,
    normalise_text,
    prepare,
    prepare_pairs,
    split_of,
)
from training.recipe import RECIPES_DIR, PrepareConfig, load_recipe, recipe_from_dict


def _pairs(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([(q, q, c, r, np.nan, 1.0) for q, c, r in rows], columns=list(PAIR_COLUMNS))


def _graded(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([(q, q, c, s) for q, c, s in rows], columns=list(GRADED_COLUMNS))


@pytest.mark.parametrize(("raw", "expected"), [
    ("Cafe\u0301  au\tlait ", "Café au lait"),
    ("  line one \r\n\r\n\n\n line two", "line one\n\nline two"),
    ("全角　空格", "全角 空格"),
], ids=["nfc-and-spaces", "blank-lines", "ideographic-space"])
def test_normalise_text_cases(raw, expected):
    assert normalise_text(raw) == expected


def test_prepare_pairs_majority_keeps_winner():
    dropped: Counter = Counter()
    out = prepare_pairs(_pairs([("q", "a", "b"), ("q", "a", "b"), ("q", "b", "a"), ("q2", "x", "y")]),
                        PrepareConfig(), dropped)
    assert out[["query", "chosen", "rejected"]].values.tolist() == [["q", "a", "b"], ["q2", "x", "y"]]
    assert dropped["contradiction outvoted"] == 1
    assert dropped["exact duplicate"] == 1


def test_prepare_pairs_tied_vote_drops_both():
    dropped: Counter = Counter()
    out = prepare_pairs(_pairs([("q", "a", "b"), ("q", "b", "a"), ("q2", "x", "y")]), PrepareConfig(), dropped)
    assert out["query"].tolist() == ["q2"]
    assert dropped["contradiction without majority"] == 2


def test_prepare_pairs_drop_policy_drops_all_votes():
    dropped: Counter = Counter()
    out = prepare_pairs(_pairs([("q", "a", "b"), ("q", "a", "b"), ("q", "b", "a")]),
                        PrepareConfig(contradictions="drop"), dropped)
    assert out.empty
    assert dropped["contradiction dropped"] == 3


def test_prepare_pairs_drops_empty_long_and_equal():
    dropped: Counter = Counter()
    out = prepare_pairs(_pairs([("q", " ", "b"), ("q", "a" * 11, "b"), ("q", "same", "same "), ("q", "ok", "no")]),
                        PrepareConfig(max_candidate_chars=10), dropped)
    assert out[["chosen", "rejected"]].values.tolist() == [["ok", "no"]]
    assert dropped["empty chosen"] == 1
    assert dropped["chosen over 10 characters"] == 1
    assert dropped["chosen equals rejected"] == 1


def test_graded_to_pairs_keeps_ties_apart():
    dropped: Counter = Counter()
    ties: Counter = Counter()
    pairs, _ = graded_to_pairs(_graded([("q", "a", 2.0), ("q", "b", 2.0), ("q", "c", 0.0), ("q", "d", 1.5)]),
                               PrepareConfig(min_score_gap=0.5), dropped, ties)
    assert sorted(map(tuple, pairs[["chosen", "rejected", "margin"]].values.tolist())) == [
        ("a", "c", 2.0), ("b", "c", 2.0), ("d", "c", 1.5)]
    assert ties == Counter({"tied pairs": 1, "gap at or below threshold": 2})


def test_graded_to_pairs_averages_repeated_candidate():
    dropped: Counter = Counter()
    ties: Counter = Counter()
    pairs, graded = graded_to_pairs(_graded([("q", "a", 1.0), ("q", "a", 3.0), ("q", "a", 3.0), ("q", "b", 0.0)]),
                                    PrepareConfig(), dropped, ties)
    assert graded["score"].tolist() == [2.0, 0.0]
    assert dropped["exact duplicate"] == 1
    assert dropped["candidate scored twice (scores averaged)"] == 1
    assert pairs[["chosen", "rejected", "margin"]].values.tolist() == [["a", "b", 2.0]]


def test_split_of_is_deterministic_and_salted():
    groups = [f"g{i}" for i in range(2000)]
    first = [split_of(g, (0.1, 0.2), "s") for g in groups]
    assert first == [split_of(g, (0.1, 0.2), "s") for g in groups]
    assert first != [split_of(g, (0.1, 0.2), "other") for g in groups]
    shares = Counter(first)
    assert 0.15 < shares["test"] / len(groups) < 0.25
    assert 0.06 < shares["dev"] / len(groups) < 0.14


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.text(min_size=0, max_size=6), min_size=1, max_size=80),
       dev=st.floats(0.0, 0.45), test=st.floats(0.01, 0.45), seed=st.text(max_size=5))
def test_assign_splits_never_shares_group(groups, dev, test, seed):
    series = pd.Series(groups)
    splits = assign_splits(series, (dev, test), seed)
    sides = pd.DataFrame({"group": series, "split": splits}).groupby("group")["split"].nunique()
    assert (sides == 1).all()
    assert set(splits) <= {"train", "dev", "test"}


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sampled_from("wxyz"), st.integers(0, 3)),
                     min_size=2, max_size=60))
def test_prepare_graded_split_keeps_groups_whole(rows):
    frame = _graded([(q, c, float(s)) for q, c, s in rows])
    prepared = prepare(LoadedData("graded", frame, ()), PrepareConfig(dev_fraction=0.3, test_fraction=0.3))
    seen = {name: set(pairs["group"]) for name, pairs in prepared.pairs.items()}
    assert not seen["train"] & seen["dev"]
    assert not seen["train"] & seen["test"]
    assert not seen["dev"] & seen["test"]
    assert set(prepared.test_lists["group"]) <= {g for g in frame["group"] if split_of(g, (0.3, 0.3), "prefrank")
                                                 == "test"}


def test_prepare_report_counts():
    frame = _graded([("q1", "a", 1.0), ("q1", "b", 0.0), ("q1", "b", 0.0), ("q2", "", 1.0), ("q2", "c", 1.0)])
    prepared = prepare(LoadedData("graded", frame, (), {"note": 3}), PrepareConfig())
    report = prepared.report
    assert report["rows_in"] == 5
    assert report["loader_notes"] == {"note": 3}
    assert report["dropped"] == {"empty candidate": 1, "exact duplicate": 1}
    assert sum(report["pairs_out"].values()) == 1


def test_prepare_max_pairs_caps_train():
    frame = _graded([(f"q{i}", c, s) for i in range(60) for c, s in (("a", 1.0), ("b", 0.0))])
    prepared = prepare(LoadedData("graded", frame, ()), PrepareConfig(max_pairs=5))
    assert len(prepared.pairs["train"]) == 5
    assert prepared.report["dropped"]["train over max_pairs"] > 0


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_recipes_load(path):
    recipe = load_recipe(str(path))
    assert recipe.name == path.stem
    assert recipe.description


def test_load_recipe_applies_overrides():
    recipe = load_recipe("translation-mqm-zhen", {"train": {"epochs": 0.5}, "prepare": {"max_pairs": 10}})
    assert recipe.train.epochs == 0.5
    assert recipe.prepare.max_pairs == 10
    assert recipe.source.kind == "mqm"


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_recipe_from_dict_round_trips(path):
    recipe = load_recipe(str(path))
    assert recipe_from_dict(recipe.to_dict()) == recipe
    assert recipe_from_dict(recipe.to_dict(), {"prepare": {"max_test_pairs": 7}}).prepare.max_test_pairs == 7


def test_load_recipe_unknown_key_raises(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[train]\nepoch = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[train\]: unknown key\(s\) \['epoch'\]"):
        load_recipe(str(path))


def test_load_recipe_missing_raises():
    with pytest.raises(ConfigError, match="recipe 'no-such-recipe' not found at"):
        load_recipe("no-such-recipe")


def test_prepare_config_rejects_bad_fractions():
    with pytest.raises(ConfigError, match=r"prepare.dev_fraction \(0.5\) and test_fraction \(0.5\) must be"):
        PrepareConfig(dev_fraction=0.5, test_fraction=0.5)
