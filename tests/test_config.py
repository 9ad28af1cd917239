"""ServerConfig: PREFRANK_* environment overrides and the checks that reject invalid settings."""

from __future__ import annotations

import pathlib

import pytest

from prefrank.config import ServerConfig
from prefrank.errors import ConfigError


def test_config_defaults_without_environment() -> None:
    config = ServerConfig.from_env(environ={})

    assert config.host == "127.0.0.1"
    assert config.port == 50051
    assert config.index_type == "flat"
    assert config.max_candidates == 1000
    assert config.max_text_chars == 32768
    assert config.max_message_bytes == 16 * 1024 * 1024
    assert config.api_key == ""
    assert config.reward_model == ""


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("PREFRANK_PORT", "6000", "port", 6000),
        ("PREFRANK_GRACE_SECONDS", "2.5", "grace_seconds", 2.5),
        ("PREFRANK_INDEX_TYPE", "hnsw", "index_type", "hnsw"),
        ("PREFRANK_API_KEY", "s3cret", "api_key", "s3cret"),
        ("PREFRANK_INDEX_DIR", "/tmp/prefrank-test-data", "index_dir", "/tmp/prefrank-test-data"),
        ("PREFRANK_MAX_CANDIDATES", "5000", "max_candidates", 5000),
        ("PREFRANK_REWARD_MODEL", "/models/reward", "reward_model", "/models/reward"),
    ],
    ids=["int", "float", "literal", "secret", "path", "limit", "model-dir"],
)
def test_config_env_override_parses(variable: str, raw: str, field: str, expected: object) -> None:
    config = ServerConfig.from_env(environ={variable: raw})

    value = getattr(config, field)
    assert value == expected
    assert type(value) is type(expected)


def test_config_explicit_override_beats_environment() -> None:
    config = ServerConfig.from_env(environ={"PREFRANK_PORT": "6000"}, port=7000)

    assert config.port == 7000


def test_config_ignores_unprefixed_variables() -> None:
    config = ServerConfig.from_env(environ={"PORT": "6000", "prefrank_port": "6001"})

    assert config.port == 50051


def test_config_index_path_expands_user() -> None:
    config = ServerConfig.from_env(environ={"PREFRANK_INDEX_DIR": "~/prefrank-data"})

    assert config.index_path == pathlib.Path("~/prefrank-data").expanduser()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PREFRANK_PORT": "abc"}, "PREFRANK_PORT='abc' is not a valid int"),
        ({"PREFRANK_PORT": "1.5"}, "PREFRANK_PORT='1.5' is not a valid int"),
        ({"PREFRANK_GRACE_SECONDS": "soon"}, "PREFRANK_GRACE_SECONDS='soon' is not a valid float"),
        ({"PREFRANK_PORT": "70000"}, "port must be in [0, 65535], got 70000"),
        ({"PREFRANK_WORKERS": "0"}, "workers must be > 0, got 0"),
        ({"PREFRANK_MAX_CANDIDATES": "-1"}, "max_candidates must be > 0, got -1"),
        ({"PREFRANK_MAX_MESSAGE_BYTES": "0"}, "max_message_bytes must be > 0, got 0"),
        ({"PREFRANK_INDEX_TYPE": "ivf"}, "index_type must be 'flat' or 'hnsw', got 'ivf'"),
        ({"PREFRANK_SEARCH_TOP_K": "2000"}, "search_top_k (2000) must be <= max_candidates (1000)"),
        ({"PREFRANK_GRACE_SECONDS": "-1"}, "torch_threads, grace_seconds and snapshot_seconds must be >= 0"),
    ],
    ids=["int-word", "int-float", "float-word", "port-range", "workers-zero", "limit-negative",
         "message-bytes-zero", "index-type", "top-k-over-limit", "negative-seconds"],
)
def test_config_invalid_value_raises(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ServerConfig.from_env(environ=environ)

    assert raised.value.message == message


def test_config_is_frozen() -> None:
    config = ServerConfig.from_env(environ={})

    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
