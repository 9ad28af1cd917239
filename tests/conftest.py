"""Shared fixtures: real servers on free loopback ports, the bundled model, temporary data dirs."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from prefrank.client import PrefrankClient  # noqa: E402
from prefrank.config import ServerConfig  # noqa: E402
from prefrank.server.app import PrefrankServer  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = pathlib.Path(os.environ.get("PREFRANK_DATA_DIR", REPO.parent / "shared" / "data"))


def require_data(name: str) -> pathlib.Path:
    """Return ../shared/data/<name>, or skip the test with the reason when it is absent."""
    path = DATA_DIR / name
    if not path.is_dir():
        pytest.skip(f"dataset {name!r} not found under {DATA_DIR} (set PREFRANK_DATA_DIR)")
    return path


def make_config(index_dir: pathlib.Path, **overrides: object) -> ServerConfig:
    """A config for tests: loopback, free port, small snapshot interval, no environment overrides."""
    values = {"host": "127.0.0.1", "port": 0, "index_dir": str(index_dir), "snapshot_seconds": 1.0,
              "workers": 4, "grace_seconds": 2.0}
    values.update(overrides)
    return ServerConfig.from_env(environ={}, **values)


class RunningServer:
    """A started PrefrankServer and a client connected to it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server = PrefrankServer(config)
        self.server.start()
        if not self.server.wait_until_ready(timeout=300):
            raise RuntimeError(f"test server failed to start: {self.server.state.require()}")
        self.client = PrefrankClient(self.server.address, api_key=config.api_key, timeout=120)

    def stop(self) -> None:
        self.client.close()
        self.server.stop(grace=1.0)


@pytest.fixture
def start_server(tmp_path: pathlib.Path) -> Iterator:
    """Factory: start_server(**config_overrides) -> RunningServer; all are stopped at teardown."""
    started: list[RunningServer] = []

    def start(**overrides: object) -> RunningServer:
        index_dir = overrides.pop("index_dir", tmp_path / "data")
        running = RunningServer(make_config(index_dir, **overrides))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server with the bundled model for read-mostly tests; tests must not depend on its index."""
    running = RunningServer(make_config(tmp_path_factory.mktemp("shared-data")))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def reward_model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A cross-encoder with one output built from the bundled MiniLM weights (seeded head), saved once.

    Its scores are not meaningful rankings; it exercises the real CrossEncoder loading and
    scoring path. Tests that write into a model directory must copy it first.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from prefrank.artifacts import bundled_retriever_path

    torch.manual_seed(0)
    model = CrossEncoder(str(bundled_retriever_path()), num_labels=1, device="cpu", max_length=128)
    directory = tmp_path_factory.mktemp("models") / "tiny-reward"
    model.save(str(directory))
    return directory
