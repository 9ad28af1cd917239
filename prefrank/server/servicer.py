"""gRPC servicers: convert between protobuf messages and domain types, nothing more."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format, struct_pb2

import prefrank
from prefrank import validation
from prefrank.errors import InvalidArgumentError, ResourceExhaustedError, UnavailableError
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.ranking import Candidate, ScoreComponents
from prefrank.retrieval.encoder import ModelDescription
from prefrank.runtime import Runtime
from prefrank.server.interceptors import status_code

if TYPE_CHECKING:
    from prefrank.server.reload import Reloader

logger = logging.getLogger(__name__)


class ServiceState:
    """The loaded runtime, or why there is none yet. Shared by the servicers; thread-safe.

    A request holds a lease on the Runtime it started with (``lease``). ``swap`` serves a new
    Runtime at once and closes the replaced one when its last lease ends, so in-flight requests
    finish on the models they started with.
    """

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._failure: str | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._leases: dict[int, int] = {}  # id(runtime) -> requests in flight on it
        self._retired: dict[int, Runtime] = {}  # replaced runtimes waiting for their last lease
        self._writes_open = True
        self._active_writes = 0
        self.last_reload_error = ""

    @contextlib.contextmanager
    def lease(self, write: bool = False) -> Iterator[Runtime]:
        """Hold the serving Runtime for one request; raise UNAVAILABLE like ``require`` when there is none.

        Args:
            write: The request changes the index. Such requests wait while a reload copies the
                last index writes into the new Runtime's index, then run on the new Runtime.
        """
        with self._lock:
            while write and not self._writes_open:
                self._changed.wait()
            runtime = self.require()
            key = id(runtime)
            self._leases[key] = self._leases.get(key, 0) + 1
            self._active_writes += write
        try:
            yield runtime
        finally:
            with self._lock:
                self._leases[key] -= 1
                if write:
                    self._active_writes -= 1
                    self._changed.notify_all()
                retired = None
                if not self._leases[key]:
                    del self._leases[key]
                    retired = self._retired.pop(key, None)
            if retired is not None:
                _close_in_background(retired)

    @contextlib.contextmanager
    def writes_paused(self) -> Iterator[None]:
        """Wait for running index writes to finish and hold new ones until the block exits."""
        with self._lock:
            self._writes_open = False
            while self._active_writes:
                self._changed.wait()
        try:
            yield
        finally:
            with self._lock:
                self._writes_open = True
                self._changed.notify_all()

    def swap(self, runtime: Runtime) -> Runtime | None:
        """Serve runtime from now on; the replaced Runtime closes when its last lease ends."""
        with self._lock:
            old, self._runtime = self._runtime, runtime
            self._failure = None
            close_now = old is not None and not self._leases.get(id(old))
            if old is not None and not close_now:
                self._retired[id(old)] = old
        if close_now:
            _close_in_background(old)
        return old

    def set_reload_error(self, reason: str) -> None:
        with self._lock:
            self.last_reload_error = reason

    def set_ready(self, runtime: Runtime) -> None:
        with self._lock:
            self._runtime = runtime

    def set_failed(self, reason: str) -> None:
        with self._lock:
            self._failure = reason

    def clear(self) -> Runtime | None:
        with self._lock:
            runtime, self._runtime = self._runtime, None
            self._failure = "server is shutting down"
            return runtime

    @property
    def runtime(self) -> Runtime | None:
        return self._runtime

    def require(self) -> Runtime:
        """Return the runtime or raise UNAVAILABLE with the reason."""
        runtime = self._runtime
        if runtime is None:
            reason = self._failure or "models and index are still loading"
            raise UnavailableError(f"server not ready: {reason}; retry later or watch grpc.health.v1.Health")
        return runtime


def _close_in_background(runtime: Runtime) -> None:
    """Close a replaced Runtime off the request thread; saving its FAISS snapshot can take a while."""
    def close() -> None:
        try:
            runtime.close()
            logger.info("Closed the replaced runtime of bundle %s", runtime.bundle_version or "(none)")
        except Exception:  # noqa: BLE001 - a failed close must not disturb serving
            logger.exception("Closing the replaced runtime failed")

    threading.Thread(target=close, name="prefrank-close-runtime", daemon=True).start()


def struct_to_dict(message: Any, field: str) -> dict[str, Any]:
    return json_format.MessageToDict(getattr(message, field)) if message.HasField(field) else {}


def dict_to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _model_info(description: ModelDescription) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=description.name, version=description.version, path=description.path,
        embedding_dim=description.embedding_dim, max_length=description.max_length,
        backend=description.backend, parity=description.parity,
    )


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """Return the call's deadline as a time.monotonic() value, or None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _components(components: ScoreComponents) -> pb.ScoreComponents:
    message = pb.ScoreComponents(
        retriever_score=components.retriever_score, fused_score=components.fused_score,
        relevance=components.relevance,
    )
    if components.reward_score is not None:
        message.reward_score = components.reward_score
    return message


def _rerank(runtime: Runtime, request: pb.RerankRequest, deadline: float | None = None) -> pb.RerankResponse:
    """Run one RerankRequest through the Ranker; shared by Rerank and ScoreStream."""
    candidates = [
        Candidate(
            id=c.id, text=c.text, metadata=struct_to_dict(c, "metadata"),
            first_stage_score=c.first_stage_score if c.HasField("first_stage_score") else None,
        )
        for c in request.candidates
    ]
    outcome = runtime.ranker.rerank(
        request.query, candidates, request.top_n, deadline, return_components=request.return_components
    )
    response = pb.RerankResponse(
        truncated_indices=outcome.truncated_indices, scorer=outcome.scorer, model_version=outcome.model_version,
        bundle_version=outcome.bundle_version,
    )
    for ranked in outcome.results:
        result = response.results.add(
            id=ranked.candidate.id, index=ranked.index, score=ranked.score,
            relevance_score=ranked.relevance_score, truncated=ranked.truncated,
        )
        if ranked.components is not None:
            result.components.CopyFrom(_components(ranked.components))
        if ranked.candidate.first_stage_score is not None:
            result.first_stage_score = ranked.candidate.first_stage_score
        if request.return_documents:
            result.text = ranked.candidate.text
            if ranked.candidate.metadata:
                result.metadata.CopyFrom(dict_to_struct(ranked.candidate.metadata))
    return response


class RerankerServicer(pb_grpc.RerankerServicer):
    """prefrank.v1.Reranker."""

    def __init__(self, state: ServiceState) -> None:
        self._state = state
        self._streams_lock = threading.Lock()
        self._active_streams = 0

    def Rerank(self, request: pb.RerankRequest, context: grpc.ServicerContext) -> pb.RerankResponse:
        with self._state.lease() as runtime:
            return _rerank(runtime, request, deadline_of(context))

    def ScoreStream(
        self, request_iterator: Iterator[pb.ScoreStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ScoreStreamResponse]:
        runtime = self._state.require()
        # Each open stream occupies a worker thread for its whole life, so streams may take at most
        # half of the workers and unary calls always keep the other half.
        limit = max(1, runtime.config.workers // 2)
        with self._streams_lock:
            if self._active_streams >= limit:
                raise ResourceExhaustedError(
                    f"ScoreStream: {self._active_streams} streams are open, the limit is {limit} "
                    "(half of the server's workers); retry later or send fewer concurrent streams"
                )
            self._active_streams += 1
        try:
            for message in request_iterator:
                try:
                    with self._state.lease() as current:
                        response = _rerank(current, message.rerank)
                except InvalidArgumentError as err:
                    error = pb.ScoreStreamError(code=status_code(err).name, message=err.message)
                    yield pb.ScoreStreamResponse(request_id=message.request_id, error=error)
                    continue
                yield pb.ScoreStreamResponse(request_id=message.request_id, response=response)
        finally:
            with self._streams_lock:
                self._active_streams -= 1

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        with self._state.lease() as runtime:
            return self._search(runtime, request, context)

    def _search(self, runtime: Runtime, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        filters = struct_to_dict(request, "filter")
        outcome = runtime.ranker.search(
            request.query, request.top_k, request.top_n, filters, deadline_of(context),
            return_components=request.return_components,
        )
        response = pb.SearchResponse(
            retrieved=outcome.retrieved, scorer=outcome.scorer, model_version=outcome.model_version,
            bundle_version=outcome.bundle_version,
        )
        for hit in outcome.results:
            document = hit.retrieved.document
            result = response.results.add(
                id=document.doc_id, score=hit.score, relevance_score=hit.relevance_score,
                retrieval_score=hit.retrieved.score, retrieval_rank=hit.retrieved.rank, truncated=hit.truncated,
            )
            if hit.components is not None:
                result.components.CopyFrom(_components(hit.components))
            if request.return_documents:
                result.title = document.title
                result.text = document.text
                if document.metadata:
                    result.metadata.CopyFrom(dict_to_struct(document.metadata))
        return response


class IndexServicer(pb_grpc.IndexServicer):
    """prefrank.v1.Index."""

    def __init__(self, state: ServiceState) -> None:
        self._state = state

    def Upsert(self, request: pb.UpsertRequest, context: grpc.ServicerContext) -> pb.UpsertResponse:
        with self._state.lease(write=True) as runtime:
            return self._upsert(runtime, request)

    def _upsert(self, runtime: Runtime, request: pb.UpsertRequest) -> pb.UpsertResponse:
        limits = runtime.config
        documents = request.documents
        validation.check_count("documents", len(documents), limits.max_candidates, "document")
        validation.check_unique_ids("documents", [d.id for d in documents])
        converted = []
        for position, document in enumerate(documents):
            validation.check_text(f"documents[{position}].text", document.text, limits.max_text_chars)
            if len(document.title) > limits.max_text_chars:
                validation.check_text(f"documents[{position}].title", document.title, limits.max_text_chars)
            converted.append({
                "id": document.id, "text": document.text, "title": document.title,
                "metadata": struct_to_dict(document, "metadata"),
            })
        result = runtime.index.upsert(converted)
        return pb.UpsertResponse(inserted=result.inserted, replaced=result.replaced, truncated=result.truncated)

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        with self._state.lease(write=True) as runtime:
            validation.check_count("ids", len(request.ids), runtime.config.max_candidates, "id")
            ids = list(request.ids)
            validation.check_unique_ids("ids", ids, id_field="")
            return pb.DeleteResponse(deleted=runtime.index.delete(ids))

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        with self._state.lease() as runtime:
            index = runtime.index
            return pb.StatsResponse(
                documents=index.count(), dimension=index.spec.dimension,
                index_type=index.spec.index_type, data_dir=str(index.directory.resolve()),
            )


class ModelsServicer(pb_grpc.ModelsServicer):
    """prefrank.v1.Models."""

    def __init__(self, state: ServiceState, reloader: Reloader | None = None) -> None:
        self._state = state
        self._reloader = reloader

    def Reload(self, request: pb.ReloadRequest, context: grpc.ServicerContext) -> pb.ReloadResponse:
        if self._reloader is None:
            raise UnavailableError("this server was built without a reloader; restart it to load new models")
        outcome = self._reloader.reload()
        return pb.ReloadResponse(
            previous_bundle_version=outcome.previous_bundle_version, bundle_version=outcome.bundle_version,
            seconds=outcome.seconds,
        )

    def GetInfo(self, request: pb.GetInfoRequest, context: grpc.ServicerContext) -> pb.GetInfoResponse:
        with self._state.lease() as runtime:
            return self._get_info(runtime)

    def _get_info(self, runtime: Runtime) -> pb.GetInfoResponse:
        config = runtime.config
        response = pb.GetInfoResponse(
            retriever=_model_info(runtime.encoder.description),
            scorer=runtime.ranker.scorer_name,
            scorer_reason=runtime.scorer_reason,
            max_candidates=config.max_candidates,
            max_text_chars=config.max_text_chars,
            max_message_bytes=config.max_message_bytes,
            server_version=prefrank.__version__,
            bundle_version=runtime.bundle_version,
            last_reload_error=self._state.last_reload_error,
        )
        if runtime.reward is not None:
            response.reward.CopyFrom(_model_info(runtime.reward.description))
        if runtime.bundle is not None:
            response.bundle_metrics.CopyFrom(dict_to_struct(
                {split: dict(values) for split, values in runtime.bundle.manifest.metrics.items()}
            ))
        return response
