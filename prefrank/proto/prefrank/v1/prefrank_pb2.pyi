from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Candidate(_message.Message):
    __slots__ = ("id", "text", "metadata", "first_stage_score")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FIRST_STAGE_SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    metadata: _struct_pb2.Struct
    first_stage_score: float
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., first_stage_score: _Optional[float] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("query", "candidates", "top_n", "return_documents", "return_components")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    query: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    top_n: int
    return_documents: bool
    return_components: bool
    def __init__(self, query: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., return_components: _Optional[bool] = ...) -> None: ...

class ScoreComponents(_message.Message):
    __slots__ = ("retriever_score", "reward_score", "fused_score", "relevance")
    RETRIEVER_SCORE_FIELD_NUMBER: _ClassVar[int]
    REWARD_SCORE_FIELD_NUMBER: _ClassVar[int]
    FUSED_SCORE_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_FIELD_NUMBER: _ClassVar[int]
    retriever_score: float
    reward_score: float
    fused_score: float
    relevance: float
    def __init__(self, retriever_score: _Optional[float] = ..., reward_score: _Optional[float] = ..., fused_score: _Optional[float] = ..., relevance: _Optional[float] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("id", "index", "score", "relevance_score", "truncated", "text", "metadata", "first_stage_score", "components")
    ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FIRST_STAGE_SCORE_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    index: int
    score: float
    relevance_score: float
    truncated: bool
    text: str
    metadata: _struct_pb2.Struct
    first_stage_score: float
    components: ScoreComponents
    def __init__(self, id: _Optional[str] = ..., index: _Optional[int] = ..., score: _Optional[float] = ..., relevance_score: _Optional[float] = ..., truncated: _Optional[bool] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., first_stage_score: _Optional[float] = ..., components: _Optional[_Union[ScoreComponents, _Mapping]] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "truncated_indices", "scorer", "model_version", "bundle_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_INDICES_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    truncated_indices: _containers.RepeatedScalarFieldContainer[int]
    scorer: str
    model_version: str
    bundle_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., truncated_indices: _Optional[_Iterable[int]] = ..., scorer: _Optional[str] = ..., model_version: _Optional[str] = ..., bundle_version: _Optional[str] = ...) -> None: ...

class ScoreStreamRequest(_message.Message):
    __slots__ = ("request_id", "rerank")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    rerank: RerankRequest
    def __init__(self, request_id: _Optional[str] = ..., rerank: _Optional[_Union[RerankRequest, _Mapping]] = ...) -> None: ...

class ScoreStreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ScoreStreamResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response: RerankResponse
    error: ScoreStreamError
    def __init__(self, request_id: _Optional[str] = ..., response: _Optional[_Union[RerankResponse, _Mapping]] = ..., error: _Optional[_Union[ScoreStreamError, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "top_k", "top_n", "filter", "return_documents", "return_components")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    top_n: int
    filter: _struct_pb2.Struct
    return_documents: bool
    return_components: bool
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., top_n: _Optional[int] = ..., filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., return_documents: _Optional[bool] = ..., return_components: _Optional[bool] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("id", "score", "relevance_score", "retrieval_score", "retrieval_rank", "truncated", "title", "text", "metadata", "components")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_RANK_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    relevance_score: float
    retrieval_score: float
    retrieval_rank: int
    truncated: bool
    title: str
    text: str
    metadata: _struct_pb2.Struct
    components: ScoreComponents
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., relevance_score: _Optional[float] = ..., retrieval_score: _Optional[float] = ..., retrieval_rank: _Optional[int] = ..., truncated: _Optional[bool] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., components: _Optional[_Union[ScoreComponents, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "retrieved", "scorer", "model_version", "bundle_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVED_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    retrieved: int
    scorer: str
    model_version: str
    bundle_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., retrieved: _Optional[int] = ..., scorer: _Optional[str] = ..., model_version: _Optional[str] = ..., bundle_version: _Optional[str] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "text", "title", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    title: str
    metadata: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., title: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("inserted", "replaced", "truncated")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    replaced: int
    truncated: int
    def __init__(self, inserted: _Optional[int] = ..., replaced: _Optional[int] = ..., truncated: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("documents", "dimension", "index_type", "data_dir")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    documents: int
    dimension: int
    index_type: str
    data_dir: str
    def __init__(self, documents: _Optional[int] = ..., dimension: _Optional[int] = ..., index_type: _Optional[str] = ..., data_dir: _Optional[str] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("previous_bundle_version", "bundle_version", "seconds")
    PREVIOUS_BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    previous_bundle_version: str
    bundle_version: str
    seconds: float
    def __init__(self, previous_bundle_version: _Optional[str] = ..., bundle_version: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "path", "embedding_dim", "max_length", "backend", "parity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PARITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    path: str
    embedding_dim: int
    max_length: int
    backend: str
    parity: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., path: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., max_length: _Optional[int] = ..., backend: _Optional[str] = ..., parity: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("retriever", "reward", "scorer", "scorer_reason", "max_candidates", "max_text_chars", "max_message_bytes", "server_version", "bundle_version", "bundle_metrics", "last_reload_error")
    RETRIEVER_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    SCORER_REASON_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_METRICS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    retriever: ModelInfo
    reward: ModelInfo
    scorer: str
    scorer_reason: str
    max_candidates: int
    max_text_chars: int
    max_message_bytes: int
    server_version: str
    bundle_version: str
    bundle_metrics: _struct_pb2.Struct
    last_reload_error: str
    def __init__(self, retriever: _Optional[_Union[ModelInfo, _Mapping]] = ..., reward: _Optional[_Union[ModelInfo, _Mapping]] = ..., scorer: _Optional[str] = ..., scorer_reason: _Optional[str] = ..., max_candidates: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., server_version: _Optional[str] = ..., bundle_version: _Optional[str] = ..., bundle_metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., last_reload_error: _Optional[str] = ...) -> None: ...
