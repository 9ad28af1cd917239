"""Bad input gets a gRPC status code and a message naming the field and the limit, never a crash.

Requests go through the raw generated stubs, so the tests see the status code and details
exactly as any gRPC caller would.
"""

from __future__ import annotations

import math
import pathlib
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import RunningServer, make_config
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prefrank import errors
from prefrank.client import PrefrankClient
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc

API_KEY = "test-key-7f3a"
STRICT_LIMITS = {"max_candidates": 3, "max_text_chars": 50, "max_message_bytes": 64 * 1024,
                 "search_top_k": 3, "search_top_n": 3, "api_key": API_KEY}
AUTH = (("authorization", f"Bearer {API_KEY}"),)


class Stubs:
    """Generated stubs on one channel. ``call`` returns the (code, details) of a failed RPC."""

    def __init__(self, address: str, metadata: tuple = ()) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
        self.metadata = metadata
        self.reranker = pb_grpc.RerankerStub(self.channel)
        self.index = pb_grpc.IndexStub(self.channel)
        self.models = pb_grpc.ModelsStub(self.channel)

    def call(self, method: Any, request: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as raised:
            method(request, timeout=60, metadata=self.metadata)
        return raised.value.code(), raised.value.details()


@pytest.fixture(scope="module")
def stubs(shared_server: RunningServer) -> Iterator[Stubs]:
    stubs = Stubs(shared_server.server.address)
    yield stubs
    stubs.channel.close()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with tiny limits and an API key."""
    running = RunningServer(make_config(tmp_path_factory.mktemp("strict-data"), **STRICT_LIMITS))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def strict_stubs(strict_server: RunningServer) -> Iterator[Stubs]:
    stubs = Stubs(strict_server.server.address, metadata=AUTH)
    yield stubs
    stubs.channel.close()


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _rerank(query: str = "a query", texts: tuple[str, ...] = ("a candidate",), **fields: Any) -> pb.RerankRequest:
    candidates = [pb.Candidate(id=f"c{i}", text=text) for i, text in enumerate(texts)]
    return pb.RerankRequest(query=query, candidates=candidates, **fields)


def _search_with_filter(values: dict[str, Any]) -> pb.SearchRequest:
    return pb.SearchRequest(query="a query", filter=_struct(values))


# --- Rerank ---

RERANK_CASES = [
    (_rerank(query=""), "query: must not be empty"),
    (_rerank(query=" \n\t"), "query: must not be empty"),
    (pb.RerankRequest(query="a query"), "candidates: at least one candidate is required"),
    (pb.RerankRequest(query="a query", candidates=[pb.Candidate(id="a", text="x"), pb.Candidate(id="a", text="y")]),
     "candidates[1].id: duplicate id 'a'; ids must be unique"),
    (pb.RerankRequest(query="a query", candidates=[pb.Candidate(id="", text="x")]),
     "candidates[0].id: must not be empty"),
    (_rerank(texts=("fine", "")), "candidates[1].text: must not be empty"),
    (_rerank(query="q" * 32769), "query: 32769 characters exceeds the limit of 32768 (max_text_chars)"),
    (_rerank(texts=("fine", "t" * 32769)),
     "candidates[1].text: 32769 characters exceeds the limit of 32768 (max_text_chars)"),
    (_rerank(top_n=-1), "top_n: must be >= 0, got -1"),
    (pb.RerankRequest(query="a query", candidates=[pb.Candidate(id="a", text="x", first_stage_score=math.nan)]),
     "candidates[0].first_stage_score: must be a finite number, got nan"),
]
RERANK_IDS = ["empty-query", "blank-query", "no-candidates", "duplicate-ids", "empty-id", "empty-text",
              "query-too-long", "text-too-long", "negative-top-n", "nan-first-stage-score"]


@pytest.mark.parametrize(("request_message", "message"), RERANK_CASES, ids=RERANK_IDS)
def test_rerank_bad_input_invalid_argument(stubs: Stubs, request_message: pb.RerankRequest, message: str) -> None:
    code, details = stubs.call(stubs.reranker.Rerank, request_message)

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == message


# --- Search ---

SEARCH_CASES = [
    (pb.SearchRequest(query=""), "query: must not be empty"),
    (pb.SearchRequest(query="q" * 32769), "query: 32769 characters exceeds the limit of 32768 (max_text_chars)"),
    (pb.SearchRequest(query="a query", top_n=-1), "top_n: must be >= 0, got -1"),
    (pb.SearchRequest(query="a query", top_k=-5), "top_k: must be >= 0, got -5"),
    (pb.SearchRequest(query="a query", top_k=1001), "top_k: 1001 exceeds the limit of 1000 (max_candidates)"),
    (_search_with_filter({"tags": ["a", "b"]}),
     "filter.tags: unsupported filter value type list; filters match strings, numbers or booleans by equality"),
    (_search_with_filter({"source": {"name": "x"}}),
     "filter.source: unsupported filter value type object; filters match strings, numbers or booleans by equality"),
    (_search_with_filter({"lang": None}),
     "filter.lang: unsupported filter value type null; filters match strings, numbers or booleans by equality"),
    (_search_with_filter({"": "x"}), "filter: keys must not be empty"),
]
SEARCH_IDS = ["empty-query", "query-too-long", "negative-top-n", "negative-top-k", "top-k-over-limit",
              "filter-list", "filter-object", "filter-null", "filter-empty-key"]


@pytest.mark.parametrize(("request_message", "message"), SEARCH_CASES, ids=SEARCH_IDS)
def test_search_bad_input_invalid_argument(stubs: Stubs, request_message: pb.SearchRequest, message: str) -> None:
    code, details = stubs.call(stubs.reranker.Search, request_message)

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == message


# --- Index ---

UPSERT_CASES = [
    (pb.UpsertRequest(), "documents: at least one document is required"),
    (pb.UpsertRequest(documents=[pb.Document(id="a", text="x"), pb.Document(id="a", text="y")]),
     "documents[1].id: duplicate id 'a'; ids must be unique"),
    (pb.UpsertRequest(documents=[pb.Document(id="", text="x")]), "documents[0].id: must not be empty"),
    (pb.UpsertRequest(documents=[pb.Document(id="a", text="x"), pb.Document(id="b", text="  ")]),
     "documents[1].text: must not be empty"),
    (pb.UpsertRequest(documents=[pb.Document(id="a", text="t" * 32769)]),
     "documents[0].text: 32769 characters exceeds the limit of 32768 (max_text_chars)"),
    (pb.UpsertRequest(documents=[pb.Document(id="a", text="x", title="t" * 32769)]),
     "documents[0].title: 32769 characters exceeds the limit of 32768 (max_text_chars)"),
]
UPSERT_IDS = ["no-documents", "duplicate-ids", "empty-id", "empty-text", "text-too-long", "title-too-long"]


@pytest.mark.parametrize(("request_message", "message"), UPSERT_CASES, ids=UPSERT_IDS)
def test_upsert_bad_input_invalid_argument(stubs: Stubs, request_message: pb.UpsertRequest, message: str) -> None:
    code, details = stubs.call(stubs.index.Upsert, request_message)

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == message


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "ids: at least one id is required"),
        (["x", "x"], "ids[1]: duplicate id 'x'; ids must be unique"),
        (["x", ""], "ids[1]: must not be empty"),
    ],
    ids=["no-ids", "duplicate-ids", "empty-id"],
)
def test_delete_bad_input_invalid_argument(stubs: Stubs, ids: list[str], message: str) -> None:
    code, details = stubs.call(stubs.index.Delete, pb.DeleteRequest(ids=ids))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == message


def test_delete_unknown_id_not_found(stubs: Stubs) -> None:
    code, details = stubs.call(stubs.index.Delete, pb.DeleteRequest(ids=["no-such-doc-1", "no-such-doc-2"]))

    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "ids: 2 unknown document id(s): 'no-such-doc-1', 'no-such-doc-2'; nothing was deleted"


def test_delete_many_unknown_ids_message_is_capped(stubs: Stubs) -> None:
    ids = [f"missing-{i:02d}" for i in range(12)]

    code, details = stubs.call(stubs.index.Delete, pb.DeleteRequest(ids=ids))

    shown = ", ".join(repr(i) for i in ids[:10])
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == f"ids: 12 unknown document id(s): {shown} and 2 more; nothing was deleted"


# --- configured limits ---

def test_rerank_over_max_candidates_invalid_argument(strict_stubs: Stubs) -> None:
    code, details = strict_stubs.call(strict_stubs.reranker.Rerank, _rerank(texts=("a", "b", "c", "d")))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "candidates: 4 candidates exceeds the limit of 3 (max_candidates)"


def test_rerank_at_max_candidates_succeeds(strict_stubs: Stubs) -> None:
    response = strict_stubs.reranker.Rerank(_rerank(texts=("a", "b", "c")), timeout=60, metadata=AUTH)

    assert sorted(r.id for r in response.results) == ["c0", "c1", "c2"]


def test_rerank_text_over_configured_limit_invalid_argument(strict_stubs: Stubs) -> None:
    code, details = strict_stubs.call(strict_stubs.reranker.Rerank, _rerank(texts=("x" * 51,)))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "candidates[0].text: 51 characters exceeds the limit of 50 (max_text_chars)"


def test_rerank_text_at_configured_limit_succeeds(strict_stubs: Stubs) -> None:
    response = strict_stubs.reranker.Rerank(_rerank(texts=("x" * 50,)), timeout=60, metadata=AUTH)

    assert [r.id for r in response.results] == ["c0"]


def test_upsert_over_max_candidates_invalid_argument(strict_stubs: Stubs) -> None:
    documents = [pb.Document(id=f"d{i}", text="x") for i in range(4)]

    code, details = strict_stubs.call(strict_stubs.index.Upsert, pb.UpsertRequest(documents=documents))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "documents: 4 documents exceeds the limit of 3 (max_candidates)"


def test_search_top_k_over_configured_limit_invalid_argument(strict_stubs: Stubs) -> None:
    code, details = strict_stubs.call(strict_stubs.reranker.Search, pb.SearchRequest(query="a query", top_k=4))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "top_k: 4 exceeds the limit of 3 (max_candidates)"


def test_message_over_max_message_bytes_resource_exhausted(strict_stubs: Stubs) -> None:
    # One candidate with 70,000 bytes of text is over the 65,536-byte message limit, so gRPC core
    # rejects the request before prefrank decodes it. The message text is gRPC's own.
    request = _rerank(texts=("x" * 70_000,))

    code, details = strict_stubs.call(strict_stubs.reranker.Rerank, request)

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == f"SERVER: Received message larger than max ({request.ByteSize()} vs. 65536)"


# --- authentication ---

@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing 'authorization' metadata; send 'authorization: Bearer <key>'"),
        ((("authorization", "Bearer wrong-key"),), "invalid API key; send 'authorization: Bearer <key>'"),
        ((("authorization", API_KEY),), "invalid API key; send 'authorization: Bearer <key>'"),
    ],
    ids=["missing", "wrong-key", "no-bearer-prefix"],
)
def test_api_key_missing_or_invalid_unauthenticated(
    strict_server: RunningServer, metadata: tuple, message: str
) -> None:
    stubs = Stubs(strict_server.server.address, metadata=metadata)
    try:
        for method, request in [
            (stubs.reranker.Rerank, _rerank()),
            (stubs.reranker.Search, pb.SearchRequest(query="a query")),
            (stubs.index.Upsert, pb.UpsertRequest(documents=[pb.Document(id="a", text="x")])),
            (stubs.index.Delete, pb.DeleteRequest(ids=["a"])),
            (stubs.index.Stats, pb.StatsRequest()),
            (stubs.models.GetInfo, pb.GetInfoRequest()),
        ]:
            code, details = stubs.call(method, request)

            assert code == grpc.StatusCode.UNAUTHENTICATED, method
            assert details == message
    finally:
        stubs.channel.close()


def test_api_key_health_needs_no_key(strict_server: RunningServer) -> None:
    with grpc.insecure_channel(strict_server.server.address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_api_key_valid_key_accepted(strict_stubs: Stubs) -> None:
    info = strict_stubs.models.GetInfo(pb.GetInfoRequest(), timeout=30, metadata=AUTH)

    assert info.max_candidates == 3
    assert info.max_text_chars == 50
    assert info.max_message_bytes == 64 * 1024


# --- the Python client maps status codes to error classes ---

@pytest.mark.parametrize(
    ("call", "error_class", "message"),
    [
        (lambda c: c.rerank("", ["x"]), errors.InvalidArgumentError, "INVALID_ARGUMENT: query: must not be empty"),
        (lambda c: c.delete(["no-such-doc"]), errors.NotFoundError,
         "NOT_FOUND: ids: 1 unknown document id(s): 'no-such-doc'; nothing was deleted"),
    ],
    ids=["invalid-argument", "not-found"],
)
def test_client_raises_error_class_for_status(
    shared_server: RunningServer, call: Any, error_class: type[errors.PrefrankError], message: str
) -> None:
    with pytest.raises(error_class) as raised:
        call(shared_server.client)

    assert raised.value.message == message


def test_client_without_key_raises_unauthenticated(strict_server: RunningServer) -> None:
    with PrefrankClient(strict_server.server.address, timeout=30) as client, \
            pytest.raises(errors.UnauthenticatedError) as raised:
        client.info()

    assert raised.value.message == (
        "UNAUTHENTICATED: missing 'authorization' metadata; send 'authorization: Bearer <key>'"
    )


def test_server_still_serves_after_bad_requests(stubs: Stubs, shared_server: RunningServer) -> None:
    stubs.call(stubs.reranker.Rerank, _rerank(query=""))

    response = shared_server.client.rerank("a query", ["a candidate"])

    assert [r.id for r in response.results] == ["0"]


def test_server_port_in_use_config_error(tmp_path: pathlib.Path) -> None:
    from prefrank.server.app import PrefrankServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(errors.ConfigError) as raised:
            PrefrankServer(make_config(tmp_path, port=port))

    assert raised.value.message.startswith(f"could not bind 127.0.0.1:{port}")
    assert raised.value.message.endswith("is the port in use?")
