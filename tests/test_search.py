"""Reranker.Search on a real server: retrieval equals exact search, reranking, top_k/top_n, documents."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import grpc
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import RunningServer, make_config, require_data
from sentence_transformers import CrossEncoder, SentenceTransformer

from prefrank.artifacts import bundled_retriever_path
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc

CORPUS = [
    ("astro-1", "Galaxies", "Telescopes observe distant galaxies, nebulae and star clusters."),
    ("astro-2", "", "The Moon orbits the Earth once every 27 days."),
    ("astro-3", "Planets", "Jupiter is the largest planet in the solar system."),
    ("cook-1", "Soup", "Simmer the tomato soup slowly with garlic and basil."),
    ("cook-2", "", "Knead the bread dough for ten minutes before it rises."),
    ("cook-3", "Pasta", "Boil the pasta in salted water until it is al dente."),
    ("sport-1", "", "The striker scored twice in the second half of the football match."),
    ("sport-2", "Tennis", "She won the tennis final in three sets."),
    ("sea-1", "", "The sailing boat crossed the stormy sea before dawn."),
    ("sea-2", "Whales", "Blue whales are the largest animals ever known to have lived."),
    ("code-1", "", "Python lists grow automatically when items are appended."),
    ("code-2", "Compilers", "A compiler translates source code into machine code."),
]
QUERY = "which planet is the biggest"


def _documents() -> list[dict]:
    return [{"id": doc_id, "title": title, "text": text, "metadata": {"topic": doc_id.split("-")[0]}}
            for doc_id, title, text in CORPUS]


def _content(title: str, text: str) -> str:
    return f"{title} {text}" if title else text


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that contains CORPUS. Tests that use it must not write."""
    running = RunningServer(make_config(tmp_path_factory.mktemp("search-data")))
    running.client.upsert(_documents())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def reward_search_server(tmp_path_factory: pytest.TempPathFactory,
                         reward_model_dir: pathlib.Path) -> Iterator[RunningServer]:
    # fp32, so the served scores can be compared with CrossEncoder.predict in the test process.
    running = RunningServer(make_config(tmp_path_factory.mktemp("reward-search-data"),
                                        reward_model=str(reward_model_dir), backend="fp32"))
    running.client.upsert(_documents())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def exact_cosines() -> dict[str, float]:
    """Cosine of QUERY to every corpus document, from the bundled retriever loaded in the test."""
    model = SentenceTransformer(str(bundled_retriever_path()), device="cpu", local_files_only=True)
    vectors = model.encode([QUERY, *(_content(t, x) for _i, t, x in CORPUS)], normalize_embeddings=True)
    return {doc_id: float(score) for (doc_id, _t, _x), score in zip(CORPUS, vectors[1:] @ vectors[0], strict=True)}


def _search_raw(server: RunningServer, request: pb.SearchRequest) -> pb.SearchResponse:
    with grpc.insecure_channel(server.server.address) as channel:
        return pb_grpc.RerankerStub(channel).Search(request, timeout=60)


def test_search_equals_exact_cosine_ranking(search_server: RunningServer, exact_cosines: dict[str, float]) -> None:
    hits = search_server.client.search(QUERY, top_k=12, top_n=12)

    expected = sorted(exact_cosines, key=lambda doc_id: -exact_cosines[doc_id])
    assert [hit.id for hit in hits] == expected
    assert hits[0].id == "astro-3"
    for hit in hits:
        assert hit.retrieval_score == pytest.approx(exact_cosines[hit.id], abs=1e-5)


def test_search_cosine_scorer_keeps_retrieval_order(search_server: RunningServer) -> None:
    hits = search_server.client.search(QUERY, top_k=12, top_n=12)

    assert [hit.retrieval_rank for hit in hits] == list(range(1, 13))
    for hit in hits:
        assert hit.score == hit.retrieval_score
        assert hit.relevance_score == pytest.approx((hit.score + 1) / 2, abs=1e-9)


@pytest.mark.parametrize(
    ("top_k", "top_n", "retrieved", "returned"),
    [(0, 0, 12, 10), (5, 0, 5, 5), (5, 3, 5, 3), (1, 10, 1, 1), (100, 2, 12, 2)],
    ids=["defaults", "top-k", "top-k-and-top-n", "top-n-over-top-k", "top-k-over-corpus"],
)
def test_search_top_k_and_top_n(
    search_server: RunningServer, top_k: int, top_n: int, retrieved: int, returned: int
) -> None:
    response = _search_raw(search_server, pb.SearchRequest(query=QUERY, top_k=top_k, top_n=top_n))
    full = search_server.client.search(QUERY, top_k=12, top_n=12)

    assert response.retrieved == retrieved
    assert [r.id for r in response.results] == [hit.id for hit in full[:returned]]
    assert response.scorer == "retriever-cosine"


def test_search_return_documents(search_server: RunningServer) -> None:
    hits = search_server.client.search("whales in the ocean", top_n=1, return_documents=True)

    assert hits[0].id == "sea-2"
    assert hits[0].title == "Whales"
    assert hits[0].text == "Blue whales are the largest animals ever known to have lived."
    assert hits[0].metadata == {"topic": "sea"}


def test_search_without_return_documents_omits_text(search_server: RunningServer) -> None:
    hits = search_server.client.search("whales in the ocean", top_n=1)

    assert (hits[0].title, hits[0].text, hits[0].metadata) == ("", "", {})


def test_search_filter_restricts_retrieval(search_server: RunningServer, exact_cosines: dict[str, float]) -> None:
    response = _search_raw(search_server, pb.SearchRequest(query=QUERY, top_n=10, filter={"topic": "cook"}))

    expected = sorted(["cook-1", "cook-2", "cook-3"], key=lambda doc_id: -exact_cosines[doc_id])
    assert [r.id for r in response.results] == expected
    assert response.retrieved == 3


def test_search_filter_without_match_returns_nothing(search_server: RunningServer) -> None:
    response = _search_raw(search_server, pb.SearchRequest(query=QUERY, filter={"topic": "gardening"}))

    assert list(response.results) == []
    assert response.retrieved == 0


def test_search_empty_index_returns_nothing(start_server: object) -> None:
    running = start_server()  # type: ignore[operator]

    response = _search_raw(running, pb.SearchRequest(query=QUERY))

    assert list(response.results) == []
    assert response.retrieved == 0


def test_search_cross_encoder_reranks_retrieved(
    reward_search_server: RunningServer, reward_model_dir: pathlib.Path, exact_cosines: dict[str, float]
) -> None:
    model = CrossEncoder(str(reward_model_dir), device="cpu", local_files_only=True)
    contents = {doc_id: _content(title, text) for doc_id, title, text in CORPUS}

    response = _search_raw(reward_search_server, pb.SearchRequest(query=QUERY, top_k=6, top_n=6))

    retrieved = sorted(exact_cosines, key=lambda doc_id: -exact_cosines[doc_id])[:6]
    logits = model.predict([(QUERY, contents[doc_id]) for doc_id in retrieved], activation_fn=torch.nn.Identity())
    expected = [retrieved[i] for i in np.argsort(-logits, kind="stable")]
    assert response.scorer == "cross-encoder"
    assert response.retrieved == 6
    assert [r.id for r in response.results] == expected
    for result in response.results:
        assert result.score == pytest.approx(float(logits[retrieved.index(result.id)]), abs=1e-4)
        assert result.relevance_score == pytest.approx(1 / (1 + np.exp(-result.score)), abs=1e-6)
        assert result.retrieval_rank == retrieved.index(result.id) + 1
        assert result.retrieval_score == pytest.approx(exact_cosines[result.id], abs=1e-5)


# --- real data ---

def _abstract_text(raw: str) -> str:
    """Join the sentences of a SciFact abstract, stored as the repr of a numpy array of strings."""
    sentences = re.findall(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", raw)
    return " ".join(single or double for single, double in sentences)


def test_search_scifact_finds_evidence(start_server: object) -> None:
    directory = require_data("scifact")
    claims = pd.read_csv(directory / "claims_validation.csv", dtype=str, keep_default_na=False)
    claims = claims[claims["evidence_doc_id"] != ""]
    first_claims = list(dict.fromkeys(claims["id"]))[:20]
    relevant = {claim_id: set(claims.loc[claims["id"] == claim_id, "evidence_doc_id"]) for claim_id in first_claims}
    queries = {claim_id: claims.loc[claims["id"] == claim_id, "claim"].iloc[0] for claim_id in first_claims}
    corpus = pd.read_csv(directory / "corpus.csv", dtype=str, keep_default_na=False)
    needed = set().union(*relevant.values())
    distractors = corpus[~corpus["doc_id"].isin(needed)].head(60)
    chosen = pd.concat([corpus[corpus["doc_id"].isin(needed)], distractors])
    running = start_server()  # type: ignore[operator]
    documents = [{"id": row.doc_id, "title": row.title, "text": _abstract_text(row.abstract)}
                 for row in chosen.itertuples()]
    for start in range(0, len(documents), 64):
        running.client.upsert(documents[start:start + 64])

    recalls = []
    for claim_id, query in queries.items():
        found = {hit.id for hit in running.client.search(query, top_k=50, top_n=10)}
        recalls.append(len(found & relevant[claim_id]) / len(relevant[claim_id]))

    assert running.client.stats().documents == len(chosen)
    assert all(document["text"] for document in documents)
    # A loose floor that checks the pipeline end to end (index, embed, retrieve), not model quality:
    # random ranking of these ~85 documents would give a recall@10 of about 0.12.
    recall = sum(recalls) / len(recalls)
    assert recall >= 0.5, f"recall@10 {recall:.2f} on {len(queries)} SciFact claims"
