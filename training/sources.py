"""Loaders for the preference datasets the recipes name, each returning a canonical pairs or graded frame.

Every loader takes the data directory and keyword options from the recipe's ``[source]`` table;
``load_source`` rejects options a loader does not accept. Paths are relative to the data
directory unless absolute.
"""

from __future__ import annotations

import hashlib
import inspect
import pathlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from training.loaders import (
    GRADED_COLUMNS,
    PAIR_COLUMNS,
    DataError,
    LoadedData,
    load_graded,
    load_pairs,
    read_table,
    select_columns,
    to_float,
)

_SPAN_MARK = re.compile(r"</?v>")
_ASSISTANT = "\n\nAssistant:"
_HUMAN = "\n\nHuman:"
# MQM weights from the google/wmt-mqm-human-evaluation README: Major 5, Minor 1,
# Minor Fluency/Punctuation 0.1, Non-translation 25; No-error and Neutral count 0.
_MQM_WEIGHTS = {"Major": 5.0, "Minor": 1.0}


def _path(data_dir: pathlib.Path, name: str) -> pathlib.Path:
    path = pathlib.Path(name).expanduser()
    return path if path.is_absolute() else data_dir / path


def _stable_seed(*parts: object) -> int:
    return int(hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def pairs_source(data_dir: pathlib.Path, *, path: str, query: str = "query", chosen: str = "chosen",
                 rejected: str = "rejected", margin: str | None = None, weight: str | None = None,
                 group: str | None = None) -> LoadedData:
    """Any pairwise file with a column mapping (see ``training.loaders.load_pairs``)."""
    return load_pairs(_path(data_dir, path), query=query, chosen=chosen, rejected=rejected, margin=margin,
                      weight=weight, group=group)


def graded_source(data_dir: pathlib.Path, *, path: str, query: str = "query", candidate: str = "candidate",
                  score: str = "score", group: str | None = None) -> LoadedData:
    """Any graded file with a column mapping (see ``training.loaders.load_graded``)."""
    return load_graded(_path(data_dir, path), query=query, candidate=candidate, score=score, group=group)


def split_dialogue(transcript: str) -> tuple[str, str]:
    """Split an hh-rlhf transcript at its last Assistant turn into (dialogue prefix, final reply).

    Raises:
        DataError: the transcript has no Assistant turn.
    """
    cut = transcript.rfind(_ASSISTANT)
    if cut < 0:
        raise DataError(f"hh-rlhf transcript has no {_ASSISTANT.strip()!r} turn: {transcript[:80]!r}")
    return transcript[:cut].strip(), transcript[cut + len(_ASSISTANT):].strip()


def hh_rlhf_source(data_dir: pathlib.Path, *, path: str = "hh-rlhf-harmless/harmless-base/test.jsonl.gz",
                   query_tail_chars: int = 0) -> LoadedData:
    """hh-rlhf ``{"chosen", "rejected"}`` transcripts: the shared prefix is the query, the final replies the pair.

    Args:
        path: The JSONL(.gz) file.
        query_tail_chars: Keep only the last N characters of the dialogue prefix (0 keeps all), so a
            cross-encoder that truncates long inputs from the end still reads the final question.

    Raises:
        DataError: a line has no ``chosen``/``rejected`` field or no Assistant turn.
    """
    file = _path(data_dir, path)
    raw = select_columns(read_table(file), file, {"chosen": "chosen", "rejected": "rejected"})
    rows, mismatched = [], 0
    for chosen_text, rejected_text in zip(raw["chosen"], raw["rejected"], strict=True):
        prefix, chosen = split_dialogue(chosen_text)
        other_prefix, rejected = split_dialogue(rejected_text)
        if prefix != other_prefix:
            mismatched += 1
            continue
        # The split key of the published dev/holdout cut: the first Human turn.
        first_turn = prefix.split(_ASSISTANT.strip(), 1)[0].replace(_HUMAN.strip(), "", 1).strip()
        query = prefix[-query_tail_chars:] if query_tail_chars > 0 else prefix
        rows.append((first_turn, query, chosen, rejected, np.nan, 1.0))
    frame = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    return LoadedData("pairs", frame, (file,), {"dialogue prefixes differ": mismatched})


def mqm_source(data_dir: pathlib.Path, *, path: str) -> LoadedData:
    """WMT MQM annotations (one row per error): source segment as query, each system's output as a candidate.

    The score of a (segment, system) is minus the summed error weights, averaged over its raters,
    so 0 is best. ``<v>``/``</v>`` span marks are removed from the texts.

    Raises:
        DataError: a required column is missing.
    """
    file = _path(data_dir, path)
    raw = read_table(file)
    frame = select_columns(raw, file, {name: name for name in
                                       ("system", "seg_id", "rater", "source", "target", "category", "severity")})
    for column in ("source", "target"):
        frame[column] = frame[column].str.replace(_SPAN_MARK, "", regex=True)

    # Score each annotated error, then sum per rater and average over raters.
    penalty = frame["severity"].map(_MQM_WEIGHTS).fillna(0.0)
    penalty[(frame["severity"] == "Minor") & (frame["category"] == "Fluency/Punctuation")] = 0.1
    penalty[frame["category"].str.startswith("Non-translation")] = 25.0
    frame["penalty"] = penalty
    per_rater = frame.groupby(["seg_id", "system", "rater"], sort=False).agg(
        source=("source", "first"), target=("target", "first"), penalty=("penalty", "sum"))
    per_system = per_rater.groupby(level=["seg_id", "system"], sort=False).agg(
        source=("source", "first"), target=("target", "first"), penalty=("penalty", "mean")).reset_index()
    graded = pd.DataFrame({
        "group": file.parent.name + ":" + per_system["seg_id"],
        "query": per_system["source"],
        "candidate": per_system["target"],
        "score": -per_system["penalty"].to_numpy(dtype=np.float64),
    })
    return LoadedData("graded", graded[list(GRADED_COLUMNS)], (file,))


def _numpy_strings(text: str) -> list[str]:
    """Parse a numpy repr of a string list (``['a'\\n 'b']``, no commas) into its items."""
    import ast

    return [ast.literal_eval(token) for token in re.findall(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", text)]


def read_scifact_corpus(path: pathlib.Path) -> dict[str, str]:
    """Return doc_id -> 'title. abstract' from the SciFact corpus CSV (abstract stored as a numpy list repr)."""
    raw = select_columns(read_table(path), path, {"doc_id": "doc_id", "title": "title", "abstract": "abstract"})
    return {doc_id: f"{title.strip()}. {' '.join(_numpy_strings(abstract))}".strip()
            for doc_id, title, abstract in zip(raw["doc_id"], raw["title"], raw["abstract"], strict=True)}


def scifact_source(data_dir: pathlib.Path, *,
                   claims: Sequence[str] = ("scifact/claims_train.csv", "scifact/claims_validation.csv"),
                   corpus: str = "scifact/corpus.csv", random_negatives: int = 4, use_cited: bool = True,
                   seed: int = 13) -> LoadedData:
    """SciFact claims as queries: evidence abstracts score 1, non-evidence abstracts score 0.

    Args:
        claims: Claim CSV files (``id, claim, evidence_doc_id, cited_doc_ids``).
        corpus: Corpus CSV (``doc_id, title, abstract``).
        random_negatives: Abstracts drawn per claim from the corpus (excluding its evidence and cited ones).
        use_cited: Add abstracts cited by the claim but not evidence for it as hard negatives.
        seed: Seed of the negative draw; each claim's draw depends only on (seed, claim id).

    Raises:
        DataError: a file is missing or an evidence doc_id is not in the corpus.
    """
    corpus_file = _path(data_dir, corpus)
    documents = read_scifact_corpus(corpus_file)
    doc_ids = sorted(documents)
    files = [corpus_file]
    frames = []
    for name in claims:
        file = _path(data_dir, name)
        files.append(file)
        frames.append(select_columns(read_table(file), file, {"id": "id", "claim": "claim",
                                                             "evidence": "evidence_doc_id", "cited": "cited_doc_ids"}))
    table = pd.concat(frames, ignore_index=True)
    rows, without_evidence = [], 0
    for claim_id, claim_rows in table.groupby("id", sort=False):
        evidence = {doc for doc in claim_rows["evidence"] if doc}
        if not evidence:
            without_evidence += 1
            continue
        missing = evidence - documents.keys()
        if missing:
            raise DataError(f"{corpus_file}: evidence doc_id(s) {sorted(missing)} of claim {claim_id} not in corpus")
        cited = {doc for text in claim_rows["cited"] for doc in re.findall(r"\d+", text)} & documents.keys()
        negatives = sorted(cited - evidence) if use_cited else []
        rng = np.random.default_rng(_stable_seed(seed, claim_id))
        excluded = evidence | cited
        while len(negatives) < len(cited - evidence) * use_cited + random_negatives:
            doc = doc_ids[int(rng.integers(len(doc_ids)))]
            if doc not in excluded:
                excluded.add(doc)
                negatives.append(doc)
        claim = claim_rows["claim"].iloc[0]
        rows += [(str(claim_id), claim, documents[doc], 1.0) for doc in sorted(evidence)]
        rows += [(str(claim_id), claim, documents[doc], 0.0) for doc in negatives]
    frame = pd.DataFrame(rows, columns=list(GRADED_COLUMNS))
    return LoadedData("graded", frame, tuple(files), {"claims without evidence": without_evidence})


def qbqtc_source(data_dir: pathlib.Path, *, paths: Sequence[str] = ("qbqtc/dev.json", "qbqtc/test_public.json")
                 ) -> LoadedData:
    """QBQTC (Chinese web search): query, page title, relevance label 0/1/2; grouped by query."""
    frames, files = [], []
    for name in paths:
        loaded = load_graded(_path(data_dir, name), query="query", candidate="title", score="label")
        frames.append(loaded.frame)
        files += loaded.files
    return LoadedData("graded", pd.concat(frames, ignore_index=True), tuple(files))


def wmt_da_source(data_dir: pathlib.Path, *, path: str = "wmt21-da-zhen/wmt21_da_zhen.tsv.gz",
                  score: str = "raw_score") -> LoadedData:
    """WMT21 DA (zh->en): source as query, system outputs as candidates, ``raw_score`` (0-100) or ``z_score``."""
    return load_graded(_path(data_dir, path), query="source", candidate="target", score=score, group="seg_id")


def describe_book(title: str, authors: str, year: str, genres: str, max_genres: int = 8) -> str:
    """Write a book as candidate text: 'Title by Authors (year). Genres: a, b, c.'."""
    text = f"{title} by {authors}"
    if year:
        text += f" ({year.split('.')[0]})"
    if genres:
        text += ". Genres: " + ", ".join(genres.split(",")[:max_genres])
    return text + "."


def goodbooks_source(data_dir: pathlib.Path, *, books: str = "goodbooks-10k/books.csv",
                     genres: str = "goodbooks-10k/book_genres.csv",
                     ratings: str = "goodbooks-10k/ratings_random.csv", context_books: int = 5,
                     context_min_rating: int = 5, seed: int = 13) -> LoadedData:
    """Goodbooks ratings as recommendation judgements, one group per user.

    The query is the user's context written as text: up to ``context_books`` books they rated at
    least ``context_min_rating``, drawn with a per-user seed. Their other rated books are the
    candidates, scored by the user's own star rating. Ratings of books without a metadata row
    are left out (counted).

    Raises:
        DataError: a file is missing, a column is absent or a rating is not a number.
    """
    books_file, genres_file, ratings_file = (_path(data_dir, name) for name in (books, genres, ratings))
    meta = select_columns(read_table(books_file), books_file, {"book_id": "book_id", "title": "title",
                                                               "authors": "authors",
                                                               "year": "original_publication_year"})
    tags = select_columns(read_table(genres_file), genres_file, {"book_id": "book_id", "genres": "genres"})
    meta = meta.merge(tags, on="book_id", how="left").fillna({"genres": ""})
    text = {row.book_id: describe_book(row.title, row.authors, row.year, row.genres) for row in meta.itertuples()}
    short = {row.book_id: f"{row.title} by {row.authors}" for row in meta.itertuples()}

    table = select_columns(read_table(ratings_file), ratings_file,
                           {"user": "user_id", "book_id": "book_id", "rating": "rating"})
    table["rating"] = to_float(table["rating"], ratings_file, "rating")
    known = table["book_id"].isin(text.keys())
    rated_unknown = int((~known).sum())
    table = table[known]

    rows = []
    for user, history in table.groupby("user", sort=False):
        liked = history.index[history["rating"] >= context_min_rating].to_numpy()
        if len(liked) < 1 or len(history) - min(len(liked), context_books) < 2:
            continue
        rng = np.random.default_rng(_stable_seed(seed, user))
        context = rng.choice(liked, size=min(len(liked), context_books), replace=False)
        query = "Books I loved: " + "; ".join(short[history.at[i, "book_id"]] for i in sorted(context)) + "."
        for index, book_id, rating in zip(history.index, history["book_id"], history["rating"], strict=True):
            if index not in context:
                rows.append((f"user:{user}", query, text[book_id], float(rating)))
    frame = pd.DataFrame(rows, columns=list(GRADED_COLUMNS))
    return LoadedData("graded", frame, (books_file, genres_file, ratings_file),
                      {"ratings of books without metadata": rated_unknown})


SOURCES: dict[str, Callable[..., LoadedData]] = {
    "pairs": pairs_source,
    "graded": graded_source,
    "hh-rlhf": hh_rlhf_source,
    "mqm": mqm_source,
    "scifact": scifact_source,
    "qbqtc": qbqtc_source,
    "wmt-da": wmt_da_source,
    "goodbooks": goodbooks_source,
}


def load_source(kind: str, data_dir: pathlib.Path, options: dict[str, Any]) -> LoadedData:
    """Run the loader named ``kind`` with the recipe's options.

    Raises:
        DataError: the kind is unknown, an option is not accepted by that loader, or loading fails.
    """
    if kind not in SOURCES:
        raise DataError(f"unknown source kind {kind!r}; expected one of {', '.join(sorted(SOURCES))}")
    loader = SOURCES[kind]
    accepted = [name for name in inspect.signature(loader).parameters if name != "data_dir"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"source kind {kind!r} does not accept option(s) {unknown}; accepted: {accepted}")
    try:
        return loader(data_dir, **options)
    except TypeError as err:
        raise DataError(f"source kind {kind!r}: {err}; accepted options: {accepted}") from err
