"""Loaders of preference data: the real files under PREFRANK_DATA_DIR and hand-written files of every format."""

from __future__ import annotations

import csv
import gzip
import json

import pandas as pd
import pytest
from conftest import DATA_DIR, require_data

from training.loaders import DataError, load_graded, load_pairs
from training.sources import _numpy_strings, describe_book, load_source, split_dialogue


def _published_mqm(lp: str, seg_id: str) -> dict[str, float]:
    """system -> published average MQM score of one segment (the .avg_seg_scores.tsv file).

    The published file names the references ref-A and ref-B; the annotation file names them ref and refB.
    """
    names = {"ref-A": "ref", "ref-B": "refB"}
    path = DATA_DIR / "wmt-mqm-ted" / lp / f"mqm_ted_{lp}.avg_seg_scores.tsv"
    scores = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        system, rest = line.split("\t")
        score, seg = rest.split(" ")
        if seg == seg_id and score != "None":
            scores[names.get(system, system)] = float(score)
    return scores


def _outputs(lp: str, seg_id: str) -> dict[str, str]:
    """system -> output text of one segment, span marks removed."""
    path = DATA_DIR / "wmt-mqm-ted" / lp / f"mqm_ted_{lp}.tsv"
    raw = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    rows = raw[raw["seg_id"] == seg_id]
    targets = rows["target"].str.replace("<v>", "").str.replace("</v>", "")
    return dict(zip(rows["system"], targets, strict=True))


@pytest.mark.parametrize(("lp", "seg_id", "rows", "groups", "systems"),
                         [("zhen", "84", 6285, 419, 15), ("ende", "1", 6034, 431, 14)], ids=["zhen", "ende"])
def test_mqm_loader_scores_match_published(lp, seg_id, rows, groups, systems):
    require_data("wmt-mqm-ted")
    loaded = load_source("mqm", DATA_DIR, {"path": f"wmt-mqm-ted/{lp}/mqm_ted_{lp}.tsv"})
    frame = loaded.frame
    assert loaded.kind == "graded"
    assert len(frame) == rows
    assert frame["group"].nunique() == groups
    segment = frame[frame["group"] == f"{lp}:{seg_id}"]
    assert len(segment) == systems
    assert not segment["candidate"].str.contains("<v>").any()
    published = _published_mqm(lp, seg_id)
    outputs = _outputs(lp, seg_id)
    assert set(published) == set(outputs)
    loaded_pairs = set(zip(segment["candidate"], segment["score"], strict=True))
    for system, score in published.items():
        assert (outputs[system], score) in loaded_pairs, system


def test_mqm_loader_zhen_known_output():
    require_data("wmt-mqm-ted")
    frame = load_source("mqm", DATA_DIR, {"path": "wmt-mqm-ted/zhen/mqm_ted_zhen.tsv"}).frame
    first = frame.iloc[0]
    assert first["group"] == "zhen:84"
    assert first["query"] == ("我希望大家能花点时间考虑一个非常简单的事实那就是，到目前为止，"
                              " 我们对宇宙的大部分了解都来自于光。")
    assert first["candidate"].startswith("I want you to take a moment to consider the very simple fact that so far")
    assert first["score"] == -20.0


def test_hh_rlhf_loader_splits_prefix():
    require_data("hh-rlhf-harmless")
    loaded = load_source("hh-rlhf", DATA_DIR, {})
    frame = loaded.frame
    assert loaded.kind == "pairs"
    assert len(frame) == 1867
    assert loaded.notes == {"dialogue prefixes differ": 5}
    assert frame["group"].nunique() == 1758
    first = frame.iloc[0]
    assert first["group"] == "what are some pranks with a pen i can do?"
    assert first["query"].startswith("Human: what are some pranks with a pen i can do?\n\nAssistant: Are you")
    assert first["query"].endswith("Human: okay some of these do not have anything to do with pens")
    assert first["chosen"] == ("No, sorry!  All of these involve a pen, the point is that you can get funny "
                               "results by doing pranks with pens.")
    assert first["rejected"].startswith("There are lots of funny things you can do with pens")
    assert not frame["chosen"].str.contains("\n\nAssistant:").any()


def test_hh_rlhf_loader_keeps_query_tail():
    require_data("hh-rlhf-harmless")
    frame = load_source("hh-rlhf", DATA_DIR, {"query_tail_chars": 50}).frame
    assert frame["query"].str.len().max() == 50
    assert frame.iloc[0]["query"].endswith("do not have anything to do with pens")


def test_split_dialogue_uses_last_assistant_turn():
    prefix, reply = split_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: see you")
    assert prefix == "Human: hi\n\nAssistant: hello\n\nHuman: bye"
    assert reply == "see you"


def test_split_dialogue_without_assistant_raises():
    with pytest.raises(DataError, match="hh-rlhf transcript has no 'Assistant:' turn"):
        split_dialogue("\n\nHuman: only a question")


def test_scifact_loader_grades_evidence():
    require_data("scifact")
    loaded = load_source("scifact", DATA_DIR, {})
    frame = loaded.frame
    assert len(frame) == 2922
    assert frame["group"].nunique() == 563
    assert loaded.notes == {"claims without evidence": 323}
    claim = frame[frame["group"] == "12"]
    assert claim["score"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert claim.iloc[0]["query"].startswith("40mg/day dosage of folic acid and 2mg/day dosage of vitamin B12")
    assert claim.iloc[0]["candidate"].startswith("Effect of homocysteine lowering on mortality and vascular disease")


def test_scifact_loader_negatives_are_deterministic():
    require_data("scifact")
    first = load_source("scifact", DATA_DIR, {"random_negatives": 2, "use_cited": False}).frame
    second = load_source("scifact", DATA_DIR, {"random_negatives": 2, "use_cited": False}).frame
    pd.testing.assert_frame_equal(first, second)
    assert (first.groupby("group")["score"].apply(lambda s: int((s == 0).sum())) == 2).all()


def test_numpy_strings_parses_list_repr():
    assert _numpy_strings("['First sentence.'\n 'It\\'s \"second\".' \"Third's.\"]") == [
        "First sentence.", "It's \"second\".", "Third's."]


def test_qbqtc_loader_reads_chinese_labels():
    require_data("qbqtc")
    frame = load_source("qbqtc", DATA_DIR, {}).frame
    assert len(frame) == 15983 + 4034
    first = frame.iloc[0]
    assert (first["query"], first["candidate"], first["score"]) == (
        "小孩咳嗽感冒", "小孩感冒过后久咳嗽该吃什么药育儿问答宝宝树", 1.0)
    assert sorted(frame["score"].unique()) == [0.0, 1.0, 2.0]


def test_wmt_da_loader_reads_segments():
    require_data("wmt21-da-zhen")
    frame = load_source("wmt-da", DATA_DIR, {}).frame
    assert len(frame) == 28777
    assert frame["group"].nunique() == 1554
    first = frame.iloc[0]
    assert first["group"] == "1"
    assert first["query"] == "新华时评：把优秀返乡农民工打造成乡村振兴生力军-新华网"
    assert first["score"] == 99.0


def test_goodbooks_loader_builds_user_context():
    require_data("goodbooks-10k")
    loaded = load_source("goodbooks", DATA_DIR, {})
    frame = loaded.frame
    assert loaded.notes == {"ratings of books without metadata": 47857}
    assert frame["group"].nunique() == 2125
    user = frame[frame["group"] == "user:58"]
    assert user["query"].nunique() == 1
    assert user.iloc[0]["query"].startswith("Books I loved: ")
    assert user.iloc[0]["query"].count(";") == 4
    assert set(user["score"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_describe_book_formats_candidate():
    assert describe_book("The Hunger Games", "Suzanne Collins", "2008.0", "fiction,ya,dystopia") == (
        "The Hunger Games by Suzanne Collins (2008). Genres: fiction, ya, dystopia.")


def _write(path, frame):
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in frame.to_dict("records"))
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)


@pytest.mark.parametrize("name", ["p.csv", "p.tsv", "p.jsonl", "p.jsonl.gz", "p.parquet"],
                         ids=["csv", "tsv", "jsonl", "jsonl-gz", "parquet"])
def test_load_pairs_maps_columns(tmp_path, name):
    path = tmp_path / name
    _write(path, pd.DataFrame({"prompt": ["源句", "q2"], "good": ["a", "b"], "bad": ["c", "d"], "gap": [2.0, 0.5]}))
    frame = load_pairs(path, query="prompt", chosen="good", rejected="bad", margin="gap").frame
    assert frame["query"].tolist() == ["源句", "q2"]
    assert frame["group"].tolist() == ["源句", "q2"]
    assert frame["chosen"].tolist() == ["a", "b"]
    assert frame["margin"].tolist() == [2.0, 0.5]
    assert frame["weight"].tolist() == [1.0, 1.0]


def test_load_pairs_missing_column_raises(tmp_path):
    path = tmp_path / "p.csv"
    _write(path, pd.DataFrame({"prompt": ["q"], "good": ["a"], "bad": ["c"]}))
    with pytest.raises(DataError) as caught:
        load_pairs(path, query="question")
    assert caught.value.message == (
        f"{path}: column(s) ['question', 'chosen', 'rejected'] not found; the file has ['prompt', 'good', 'bad']. "
        "Fix the column mapping in the recipe's [source] section")


def test_load_graded_bad_score_names_line(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("query,candidate,score\nq,a,1\nq,b,high\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_graded(path)
    assert caught.value.message == f"{path}, line 3, column 'score': expected a number, got 'high'"


def test_load_jsonl_invalid_line_names_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"query": "q", "candidate": "a", "score": 1}\n{"query": "q",\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"g\.jsonl, line 2: invalid JSON"):
        load_graded(path)


def test_load_source_unknown_option_raises():
    with pytest.raises(DataError) as caught:
        load_source("mqm", DATA_DIR, {"path": "x.tsv", "colour": "red"})
    assert caught.value.message == "source kind 'mqm' does not accept option(s) ['colour']; accepted: ['path']"


def test_load_source_unknown_kind_raises():
    with pytest.raises(DataError, match="unknown source kind 'nope'; expected one of goodbooks, graded, hh-rlhf"):
        load_source("nope", DATA_DIR, {})
