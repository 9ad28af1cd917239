"""A typed Python client for the prefrank gRPC service."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prefrank import errors
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.server.interceptors import STATUS_CODES

DEFAULT_ADDRESS = "127.0.0.1:50051"
_ERRORS_BY_CODE = {code: cls for cls, code in STATUS_CODES.items()}


class ClientError(errors.PrefrankError):
    """An RPC failed with a status code that has no more specific error class."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Components:
    """The parts of a result's score (requested with ``return_components``).

    Attributes:
        retriever_score: The retriever cosine.
        reward_score: The reward model's logit; None when no reward model is loaded.
        fused_score: The score results are ordered by (equals the result's score).
        relevance: The calibrated relevance (equals the result's relevance_score).
    """

    retriever_score: float
    reward_score: float | None
    fused_score: float
    relevance: float


@dataclass(frozen=True)
class RerankResult:
    """One reranked candidate; ``index`` is its 0-based position in the request."""

    id: str
    index: int
    score: float
    relevance_score: float
    truncated: bool
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    components: Components | None = None


@dataclass(frozen=True)
class RerankResponse:
    results: list[RerankResult]
    truncated_indices: list[int]
    scorer: str
    model_version: str
    #: The model bundle that produced the scores; empty without a bundle.
    bundle_version: str = ""


@dataclass(frozen=True)
class SearchResult:
    """One search hit: reranked score, retriever cosine and 1-based rank before reranking."""

    id: str
    score: float
    relevance_score: float
    retrieval_score: float
    retrieval_rank: int
    truncated: bool
    title: str = ""
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    components: Components | None = None


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    replaced: int
    truncated: int


def _struct(values: Mapping[str, Any] | None) -> Any:
    message = pb.Document().metadata
    message.update(dict(values or {}))
    return message


def _to_dict(message: Any, name: str) -> dict[str, Any]:
    return json_format.MessageToDict(getattr(message, name)) if message.HasField(name) else {}


def _as_candidate(position: int, candidate: str | Mapping[str, Any]) -> pb.Candidate:
    if isinstance(candidate, str):
        return pb.Candidate(id=str(position), text=candidate)
    message = pb.Candidate(id=str(candidate.get("id", position)), text=candidate["text"])
    if candidate.get("metadata"):
        message.metadata.CopyFrom(_struct(candidate["metadata"]))
    if candidate.get("first_stage_score") is not None:
        message.first_stage_score = float(candidate["first_stage_score"])
    return message


class PrefrankClient:
    """Client for the Reranker, Index and Models services.

    Failed calls raise the matching ``prefrank.errors`` class (InvalidArgumentError for
    INVALID_ARGUMENT, NotFoundError for NOT_FOUND, ...), or ClientError for other codes.

    Args:
        address: host:port of the server.
        api_key: Sent as 'authorization: Bearer <key>' when set.
        timeout: Default deadline per call in seconds.
        max_message_bytes: Largest message the channel sends or receives.

    Example:
        >>> with PrefrankClient("127.0.0.1:50051") as client:
        ...     response = client.rerank("capital of France", ["Paris is the capital.", "Bananas."])
        ...     response.results[0].index
        0
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        api_key: str = "",
        timeout: float = 60.0,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ])
        self.address = address
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout
        self._reranker = pb_grpc.RerankerStub(self._channel)
        self._index = pb_grpc.IndexStub(self._channel)
        self._models = pb_grpc.ModelsStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> PrefrankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            code = err.code()
            cls = _ERRORS_BY_CODE.get(code)
            message = f"{code.name}: {err.details()}"
            if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (err.details() or ""):
                message += f"; is a server running at {self.address}? Start one with `prefrank serve`"
            raise (cls(message) if cls else ClientError(message, code)) from err

    # --- Reranker ---

    def rerank(
        self,
        query: str,
        candidates: Sequence[str | Mapping[str, Any]],
        top_n: int = 0,
        return_documents: bool = False,
        timeout: float | None = None,
        return_components: bool = False,
    ) -> RerankResponse:
        """Order candidates for a query, best first.

        Args:
            candidates: Texts (ids become their positions) or mappings with ``text`` and
                optional ``id``, ``metadata`` and ``first_stage_score``.
            top_n: Results to return; 0 returns all.
            return_components: Attach each result's Components (retriever, reward, fused, relevance).
        """
        request = pb.RerankRequest(
            query=query, candidates=[_as_candidate(i, c) for i, c in enumerate(candidates)],
            top_n=top_n, return_documents=return_documents, return_components=return_components,
        )
        response = self._call(self._reranker.Rerank, request, timeout)
        results = [
            RerankResult(r.id, r.index, r.score, r.relevance_score, r.truncated, r.text, _to_dict(r, "metadata"),
                         _components(r))
            for r in response.results
        ]
        return RerankResponse(results, list(response.truncated_indices), response.scorer, response.model_version,
                              response.bundle_version)

    def search(
        self,
        query: str,
        top_k: int = 0,
        top_n: int = 0,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - the API field name
        return_documents: bool = False,
        timeout: float | None = None,
        return_components: bool = False,
    ) -> list[SearchResult]:
        """Retrieve top_k documents (0 = server default), rerank, and return the best top_n."""
        request = pb.SearchRequest(query=query, top_k=top_k, top_n=top_n, return_documents=return_documents,
                                   return_components=return_components)
        if filter:
            request.filter.CopyFrom(_struct(filter))
        response = self._call(self._reranker.Search, request, timeout)
        return [
            SearchResult(r.id, r.score, r.relevance_score, r.retrieval_score, r.retrieval_rank, r.truncated,
                         r.title, r.text, _to_dict(r, "metadata"), _components(r))
            for r in response.results
        ]

    # --- Index ---

    def upsert(self, documents: Iterable[Mapping[str, Any]], timeout: float | None = None) -> UpsertResult:
        """Insert or replace documents given as mappings with id, text, optional title and metadata."""
        request = pb.UpsertRequest()
        for doc in documents:
            message = request.documents.add(id=str(doc["id"]), text=doc["text"], title=doc.get("title") or "")
            if doc.get("metadata"):
                message.metadata.CopyFrom(_struct(doc["metadata"]))
        response = self._call(self._index.Upsert, request, timeout)
        return UpsertResult(response.inserted, response.replaced, response.truncated)

    def delete(self, ids: Sequence[str], timeout: float | None = None) -> int:
        """Delete documents by id, all or nothing; return how many were deleted."""
        return self._call(self._index.Delete, pb.DeleteRequest(ids=list(ids)), timeout).deleted

    def stats(self, timeout: float | None = None) -> pb.StatsResponse:
        return self._call(self._index.Stats, pb.StatsRequest(), timeout)

    # --- Models and health ---

    def info(self, timeout: float | None = None) -> pb.GetInfoResponse:
        return self._call(self._models.GetInfo, pb.GetInfoRequest(), timeout)

    def reload(self, timeout: float | None = None) -> pb.ReloadResponse:
        """Ask the server to load the 'current' model bundle and swap it in.

        Raises:
            errors.FailedPreconditionError: the bundle did not load; the server keeps the old one.
        """
        return self._call(self._models.Reload, pb.ReloadRequest(), timeout)

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """Return the health status name ("SERVING", "NOT_SERVING", ...) of a service ("" = server)."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 300.0, poll: float = 0.5) -> None:
        """Poll health until the server is SERVING.

        Raises:
            errors.UnavailableError: not SERVING within timeout seconds.
        """
        import time

        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.health(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                if last == "SERVING":
                    return
            except errors.PrefrankError as err:
                last = err.message
            time.sleep(poll)
        raise errors.UnavailableError(f"server not SERVING after {timeout:.0f} s (last status: {last})")


def _components(result: Any) -> Components | None:
    if not result.HasField("components"):
        return None
    parts = result.components
    return Components(parts.retriever_score, parts.reward_score if parts.HasField("reward_score") else None,
                      parts.fused_score, parts.relevance)
