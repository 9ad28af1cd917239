"""gRPC servicers: convert between protobuf messages and domain types, nothing more."""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

import prefrank
from prefrank import validation
from prefrank.errors import UnavailableError
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.ranking import Candidate
from prefrank.retrieval.encoder import ModelDescription
from prefrank.runtime import Runtime

logger = logging.getLogger(__name__)


class ServiceState:
    """The loaded runtime, or why there is none yet. Shared by the servicers; thread-safe."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._failure: str | None = None
        self._lock = threading.Lock()

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
    )


class RerankerServicer(pb_grpc.RerankerServicer):
    """prefrank.v1.Reranker."""

    def __init__(self, state: ServiceState) -> None:
        self._state = state

    def Rerank(self, request: pb.RerankRequest, context: grpc.ServicerContext) -> pb.RerankResponse:
        runtime = self._state.require()
        candidates = [
            Candidate(
                id=c.id, text=c.text, metadata=struct_to_dict(c, "metadata"),
                first_stage_score=c.first_stage_score if c.HasField("first_stage_score") else None,
            )
            for c in request.candidates
        ]
        outcome = runtime.ranker.rerank(request.query, candidates, request.top_n)
        response = pb.RerankResponse(
            truncated_indices=outcome.truncated_indices, scorer=outcome.scorer, model_version=outcome.model_version
        )
        for ranked in outcome.results:
            result = response.results.add(
                id=ranked.candidate.id, index=ranked.index, score=ranked.score,
                relevance_score=ranked.relevance_score, truncated=ranked.truncated,
            )
            if ranked.candidate.first_stage_score is not None:
                result.first_stage_score = ranked.candidate.first_stage_score
            if request.return_documents:
                result.text = ranked.candidate.text
                if ranked.candidate.metadata:
                    result.metadata.CopyFrom(dict_to_struct(ranked.candidate.metadata))
        return response

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        runtime = self._state.require()
        filters = struct_to_dict(request, "filter")
        outcome = runtime.ranker.search(request.query, request.top_k, request.top_n, filters)
        response = pb.SearchResponse(
            retrieved=outcome.retrieved, scorer=outcome.scorer, model_version=outcome.model_version
        )
        for hit in outcome.results:
            document = hit.retrieved.document
            result = response.results.add(
                id=document.doc_id, score=hit.score, relevance_score=hit.relevance_score,
                retrieval_score=hit.retrieved.score, retrieval_rank=hit.retrieved.rank, truncated=hit.truncated,
            )
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
        runtime = self._state.require()
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
        runtime = self._state.require()
        validation.check_count("ids", len(request.ids), runtime.config.max_candidates, "id")
        ids = list(request.ids)
        validation.check_unique_ids("ids", ids)
        return pb.DeleteResponse(deleted=runtime.index.delete(ids))

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        runtime = self._state.require()
        index = runtime.index
        return pb.StatsResponse(
            documents=index.count(), dimension=index.spec.dimension,
            index_type=index.spec.index_type, data_dir=str(index.directory.resolve()),
        )


class ModelsServicer(pb_grpc.ModelsServicer):
    """prefrank.v1.Models."""

    def __init__(self, state: ServiceState) -> None:
        self._state = state

    def GetInfo(self, request: pb.GetInfoRequest, context: grpc.ServicerContext) -> pb.GetInfoResponse:
        runtime = self._state.require()
        config = runtime.config
        response = pb.GetInfoResponse(
            retriever=_model_info(runtime.encoder.description),
            scorer=runtime.scorer.kind,
            scorer_reason=runtime.scorer_reason,
            max_candidates=config.max_candidates,
            max_text_chars=config.max_text_chars,
            max_message_bytes=config.max_message_bytes,
            server_version=prefrank.__version__,
        )
        if runtime.reward is not None:
            response.reward.CopyFrom(_model_info(runtime.reward.description))
        return response
