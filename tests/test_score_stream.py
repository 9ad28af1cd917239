"""Reranker.ScoreStream: streamed results equal Rerank, errors stay per request, in-flight work is bounded."""

from __future__ import annotations

import threading

import grpc
import pytest
from conftest import RunningServer

from prefrank.batch.stream import score_stream
from prefrank.errors import InvalidArgumentError
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc

QUERIES = [
    ("tea", "How do I brew green tea?", ["Steep green tea leaves at 80 degrees.", "Coffee is roasted.", "Boil water."]),
    ("beijing", "北京是哪个国家的首都", ["北京是中国的首都。", "Paris is the capital of France."]),
    ("cat", "what is a cat", ["A cat is a small furry animal.", "Bananas are yellow."]),
]


def rerank_request(query: str, texts: list[str]) -> pb.RerankRequest:
    return pb.RerankRequest(query=query, candidates=[pb.Candidate(id=f"c{i}", text=t) for i, t in enumerate(texts)])


@pytest.fixture
def channel(shared_server: RunningServer):
    with grpc.insecure_channel(shared_server.server.address) as opened:
        yield opened


def test_score_stream_results_equal_rerank(shared_server, channel):
    requests = [(request_id, rerank_request(query, texts)) for request_id, query, texts in QUERIES]
    stub = pb_grpc.RerankerStub(channel)

    responses = list(score_stream(channel, requests, max_in_flight=2, timeout=120))

    assert [r.request_id for r in responses] == ["tea", "beijing", "cat"]
    for (_, request), streamed in zip(requests, responses, strict=True):
        assert streamed.WhichOneof("outcome") == "response"
        assert streamed.response == stub.Rerank(request, timeout=60)


def test_score_stream_invalid_request_reports_error(channel):
    requests = [("bad", rerank_request("   ", ["text"])), ("good", rerank_request("tea", ["green tea"]))]

    responses = list(score_stream(channel, requests, timeout=120))

    assert responses[0].request_id == "bad"
    assert responses[0].error == pb.ScoreStreamError(code="INVALID_ARGUMENT", message="query: must not be empty")
    assert responses[1].request_id == "good"
    assert [r.id for r in responses[1].response.results] == ["c0"]


def test_score_stream_client_bounds_in_flight_requests(channel):
    sent = []
    answered = []
    max_unanswered = 0
    lock = threading.Lock()

    def requests():
        nonlocal max_unanswered
        for n in range(12):
            with lock:
                sent.append(n)
                max_unanswered = max(max_unanswered, len(sent) - len(answered))
            yield str(n), rerank_request(f"query {n}", ["a candidate", "another candidate"])

    for response in score_stream(channel, requests(), max_in_flight=3, timeout=120):
        with lock:
            answered.append(response.request_id)

    assert answered == [str(n) for n in range(12)]
    assert max_unanswered <= 3


def test_score_stream_rejects_non_positive_window(channel):
    with pytest.raises(InvalidArgumentError) as raised:
        list(score_stream(channel, [], max_in_flight=0))

    assert raised.value.message == "max_in_flight must be > 0, got 0"


def test_score_stream_too_many_streams_resource_exhausted(start_server):
    server = start_server(workers=2)  # one stream at a time
    with grpc.insecure_channel(server.server.address) as opened:
        stub = pb_grpc.RerankerStub(opened)
        release = threading.Event()

        def held_open():
            yield pb.ScoreStreamRequest(request_id="first", rerank=rerank_request("tea", ["green tea"]))
            release.wait(60)

        first = stub.ScoreStream(held_open(), timeout=120)
        assert next(first).request_id == "first"

        with pytest.raises(grpc.RpcError) as raised:
            list(stub.ScoreStream(iter([pb.ScoreStreamRequest(request_id="second")]), timeout=60))

        release.set()
        assert list(first) == []
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.details() == (
        "ScoreStream: 1 streams are open, the limit is 1 (half of the server's workers); "
        "retry later or send fewer concurrent streams"
    )
