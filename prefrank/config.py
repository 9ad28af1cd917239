"""Typed service settings. Every field can be overridden by a PREFRANK_<FIELD> environment variable."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from prefrank.errors import ConfigError

ENV_PREFIX = "PREFRANK_"
IndexType = Literal["flat", "hnsw"]


def _setting(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses.field metadata
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Settings of the gRPC service, its models and its index.

    Defaults suit a single machine. ``ServerConfig.from_env()`` applies ``PREFRANK_*``
    environment variables, e.g. ``PREFRANK_PORT=6000``.
    """

    # --- network ---
    host: str = _setting("127.0.0.1", "address to bind; use 0.0.0.0 or [::] to accept remote callers")
    port: int = _setting(50051, "TCP port to bind; 0 picks a free port")
    workers: int = _setting(8, "gRPC worker threads (concurrent requests in progress)")
    max_message_bytes: int = _setting(
        16 * 1024 * 1024, "largest request or response message in bytes; larger ones get RESOURCE_EXHAUSTED"
    )
    grace_seconds: float = _setting(10.0, "seconds in-flight requests get to finish on SIGTERM")
    api_key: str = _setting("", "if set, callers must send 'authorization: Bearer <key>' metadata")

    # --- models ---
    retriever_model: str = _setting(
        "", "sentence-transformers bi-encoder directory; empty uses the bundled all-MiniLM-L6-v2"
    )
    reward_model: str = _setting(
        "", "sentence-transformers CrossEncoder directory; empty ranks by the retriever cosine"
    )
    models_dir: str = _setting(
        "", "directory of versioned model bundles; when it has a 'current' bundle, the retriever, reward "
        "model and score fusion load from it (retriever_model and reward_model still win when set); "
        "empty loads no bundle"
    )
    device: str = _setting("cpu", "torch device for both models")
    torch_threads: int = _setting(0, "torch intra-op threads; 0 uses one per CPU core")
    batch_size: int = _setting(32, "most pairs or texts per model forward pass")
    backend: str = _setting(
        "auto", "reward model inference: fp32, bf16, int8, or auto (bf16 where the CPU has bf16 instructions "
        "and it passes the parity check against fp32)"
    )
    max_batch_tokens: int = _setting(8192, "most padded tokens per reward model forward pass")
    max_wait_ms: float = _setting(2.0, "milliseconds a request waits for others to share its batch")
    max_queued_pairs: int = _setting(
        20000, "pairs waiting for the reward model before requests get RESOURCE_EXHAUSTED"
    )

    # --- index ---
    index_dir: str = _setting("prefrank-data", "directory of the FAISS snapshot and the SQLite document store")
    index_type: IndexType = _setting("flat", "'flat' (exact inner product) or 'hnsw' (approximate)")
    hnsw_m: int = _setting(32, "HNSW graph degree (index_type=hnsw)")
    hnsw_ef_construction: int = _setting(200, "HNSW build-time search depth (index_type=hnsw)")
    hnsw_ef_search: int = _setting(128, "HNSW query-time search depth (index_type=hnsw)")
    snapshot_seconds: float = _setting(
        30.0, "seconds between FAISS snapshots after a change; 0 saves only at shutdown "
        "(SQLite commits every write at once, so a crash loses no acknowledged write either way)"
    )

    # --- request limits ---
    max_candidates: int = _setting(1000, "most candidates per Rerank, documents per Upsert, top_k per Search")
    max_text_chars: int = _setting(32768, "longest query, candidate or document text in characters")
    search_top_k: int = _setting(100, "documents retrieved before reranking when a Search sets no top_k")
    search_top_n: int = _setting(10, "results returned when a Search sets no top_n")

    def __post_init__(self) -> None:
        positive = ("workers", "max_message_bytes", "batch_size", "max_batch_tokens", "max_queued_pairs",
                    "hnsw_m", "hnsw_ef_construction",
                    "hnsw_ef_search", "max_candidates", "max_text_chars", "search_top_k", "search_top_n")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if self.max_queued_pairs < self.max_candidates:
            raise ConfigError(
                f"max_queued_pairs ({self.max_queued_pairs}) must be >= max_candidates ({self.max_candidates}), "
                "or a full-size request could never be queued"
            )
        if self.backend not in ("auto", "fp32", "bf16", "int8"):
            raise ConfigError(f"backend must be 'auto', 'fp32', 'bf16' or 'int8', got {self.backend!r}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.index_type not in typing.get_args(IndexType):
            raise ConfigError(f"index_type must be 'flat' or 'hnsw', got {self.index_type!r}")
        if self.search_top_k > self.max_candidates:
            raise ConfigError(
                f"search_top_k ({self.search_top_k}) must be <= max_candidates ({self.max_candidates})"
            )
        if self.torch_threads < 0 or self.grace_seconds < 0 or self.snapshot_seconds < 0:
            raise ConfigError("torch_threads, grace_seconds and snapshot_seconds must be >= 0")

    @property
    def index_path(self) -> pathlib.Path:
        return pathlib.Path(self.index_dir).expanduser()

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Build a config from defaults, then ``PREFRANK_*`` variables, then explicit overrides.

        Raises:
            ConfigError: a variable does not parse as its field's type, or a value is invalid.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = parse_value(f, raw, source=ENV_PREFIX + f.name.upper())
        values.update(overrides)
        return cls(**values)


def field_type(f: dataclasses.Field) -> type:
    """Return the runtime type (int, float, bool, str) a config field parses to."""
    hint = typing.get_type_hints(ServerConfig)[f.name] if f.name in ServerConfig.__dataclass_fields__ else f.type
    if typing.get_origin(hint) is Literal:
        return str
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def parse_value(f: dataclasses.Field, raw: str, source: str) -> Any:
    """Parse one string setting into the field's type, naming the source on failure."""
    kind = field_type(f)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes")
        return kind(raw)
    except ValueError as err:
        raise ConfigError(f"{source}={raw!r} is not a valid {kind.__name__}") from err
