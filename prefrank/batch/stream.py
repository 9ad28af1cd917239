"""A ScoreStream client that keeps a bounded number of requests unanswered."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from prefrank.errors import InvalidArgumentError
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc


def score_stream(
    channel: grpc.Channel,
    requests: Iterable[tuple[str, pb.RerankRequest]],
    max_in_flight: int = 8,
    timeout: float | None = None,
    metadata: Any = None,
) -> Iterator[pb.ScoreStreamResponse]:
    """Send (request_id, RerankRequest) pairs over one ScoreStream call and yield the responses.

    At most max_in_flight requests are sent without a response yet: the sending side waits for
    a response before it takes the next pair from ``requests``. A caller can so stream a file of
    any size without holding it in memory. Responses arrive in request order.

    Args:
        channel: An open channel to the server.
        requests: Pairs of caller-chosen request id and request; read lazily.
        max_in_flight: Unanswered requests allowed at once.
        timeout: Deadline for the whole stream in seconds; None for no deadline.
        metadata: Call metadata, e.g. the authorization header.

    Raises:
        InvalidArgumentError: max_in_flight is not positive.
        grpc.RpcError: the stream failed as a whole (UNAVAILABLE, RESOURCE_EXHAUSTED, ...).

    Example:
        >>> with grpc.insecure_channel("127.0.0.1:50051") as channel:
        ...     pairs = [("q1", pb.RerankRequest(query="tea", candidates=[pb.Candidate(id="a", text="green tea")]))]
        ...     [r.request_id for r in score_stream(channel, pairs)]
        ['q1']
    """
    if max_in_flight <= 0:
        raise InvalidArgumentError(f"max_in_flight must be > 0, got {max_in_flight}")
    slots = threading.Semaphore(max_in_flight)
    finished = threading.Event()

    def outgoing() -> Iterator[pb.ScoreStreamRequest]:
        # gRPC reads this generator on its own thread, so blocking here only delays sending.
        # A slot is taken before the next pair is read, so requests is never read ahead.
        pairs = iter(requests)
        while True:
            while not slots.acquire(timeout=0.5):
                if finished.is_set():
                    return
            if finished.is_set():
                return
            try:
                request_id, request = next(pairs)
            except StopIteration:
                return
            yield pb.ScoreStreamRequest(request_id=request_id, rerank=request)

    stub = pb_grpc.RerankerStub(channel)
    call = stub.ScoreStream(outgoing(), timeout=timeout, metadata=metadata)
    try:
        for response in call:
            slots.release()
            yield response
    finally:
        finished.set()
        call.cancel()
