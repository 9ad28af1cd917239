"""Hot reload of model bundles: swap under load, index per retriever version, failures, SIGHUP."""

from __future__ import annotations

import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from bundle_helpers import make_bundle, platt_fusion
from conftest import REPO

from prefrank.bundles import set_current
from prefrank.client import PrefrankClient
from prefrank.errors import FailedPreconditionError
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.reloading import ACTIVE_STORE_FILE
from prefrank.scoring.fusion import FusionModel
from prefrank.server.servicer import ServiceState

FUSIONS = {"v1": platt_fusion(reward=0.7, retriever=2.5, bias=-0.4),
           "v2": platt_fusion(reward=0.2, retriever=4.0, bias=1.0, slope=0.8, intercept=-0.1)}
DOCUMENTS = [
    {"id": "vaccine", "text": "Vaccines train the immune system with a harmless antigen."},
    {"id": "market", "text": "The stock market fell sharply on Tuesday."},
    {"id": "memory", "text": "Memory B cells remember antigens for years."},
    {"id": "zh", "text": "疫苗通过让免疫系统接触无害抗原来产生抗体。"},
]
QUERY = "how do vaccines work"


@pytest.fixture(scope="module")
def tuned_retriever(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The bundled MiniLM with one bias shifted: a retriever with another content version."""
    import torch
    from sentence_transformers import SentenceTransformer

    from prefrank.artifacts import bundled_retriever_path

    model = SentenceTransformer(str(bundled_retriever_path()), device="cpu", local_files_only=True)
    with torch.no_grad():
        next(p for name, p in model.named_parameters() if name.endswith("LayerNorm.bias")).add_(0.01)
    directory = tmp_path_factory.mktemp("retrievers") / "tuned"
    model.save(str(directory))
    return directory


@pytest.fixture
def models_dir(tmp_path: pathlib.Path, reward_model_dir: pathlib.Path) -> pathlib.Path:
    """Bundles v1 and v2 (same models, different fusion), with current -> v1."""
    directory = tmp_path / "models"
    for version, fusion in FUSIONS.items():
        make_bundle(directory, version, reward_model_dir, fusion=fusion)
    set_current(directory, "v1")
    return directory


def _check_fused(fusion: FusionModel, parts: pb.ScoreComponents) -> None:
    expected = fusion.reward_weight * parts.reward_score + fusion.retriever_weight * parts.retriever_score + fusion.bias
    assert parts.fused_score == pytest.approx(expected, rel=1e-6, abs=1e-9)
    calibrator = fusion.calibrator
    relevance = 1 / (1 + math.exp(-(calibrator.slope * parts.fused_score + calibrator.intercept)))
    assert parts.relevance == pytest.approx(relevance, rel=1e-6, abs=1e-12)


def test_reload_swaps_under_concurrent_requests(start_server, models_dir: pathlib.Path) -> None:
    running = start_server(models_dir=str(models_dir), backend="fp32", workers=8)
    running.client.upsert(DOCUMENTS)
    stop = threading.Event()
    failures: list[str] = []
    seen: dict[str, int] = {"v1": 0, "v2": 0}
    lock = threading.Lock()

    def hammer(search: bool) -> None:
        with grpc.insecure_channel(running.server.address) as channel:
            stub = pb_grpc.RerankerStub(channel)
            while not stop.is_set():
                try:
                    if search:
                        response = stub.Search(pb.SearchRequest(query=QUERY, top_k=4, top_n=4,
                                                                return_components=True), timeout=60)
                    else:
                        candidates = [pb.Candidate(id=d["id"], text=d["text"]) for d in DOCUMENTS]
                        response = stub.Rerank(pb.RerankRequest(query=QUERY, candidates=candidates,
                                                                return_components=True), timeout=60)
                    assert len(response.results) == 4
                    for result in response.results:
                        _check_fused(FUSIONS[response.bundle_version], result.components)
                    with lock:
                        seen[response.bundle_version] += 1
                except Exception as err:  # noqa: BLE001 - collected and asserted below
                    failures.append(repr(err))

    threads = [threading.Thread(target=hammer, args=(i % 2 == 0,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        for version in ("v2", "v1", "v2"):
            time.sleep(0.4)
            set_current(models_dir, version)
            reloaded = running.client.reload()
            assert reloaded.bundle_version == version
    finally:
        time.sleep(0.4)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert failures == []
    assert seen["v1"] > 0
    assert seen["v2"] > 0
    info = running.client.info()
    assert info.bundle_version == "v2"
    assert info.last_reload_error == ""
    assert running.client.stats().documents == len(DOCUMENTS)


def test_reload_new_retriever_fills_its_own_index(
    start_server, tmp_path: pathlib.Path, models_dir: pathlib.Path, reward_model_dir: pathlib.Path,
    tuned_retriever: pathlib.Path,
) -> None:
    make_bundle(models_dir, "v3", reward_model_dir, retriever_dir=tuned_retriever, fusion=FUSIONS["v2"])
    index_dir = tmp_path / "index"
    running = start_server(models_dir=str(models_dir), index_dir=index_dir, backend="fp32")
    running.client.upsert(DOCUMENTS[:3])
    old_retriever = running.client.info().retriever.version
    old_directory = index_dir / f"retriever-{old_retriever}"
    assert (index_dir / ACTIVE_STORE_FILE).read_text().strip() == old_directory.name

    # Upserts keep arriving while the reload embeds the documents with the new retriever.
    written: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def upsert_loop() -> None:
        with PrefrankClient(running.server.address, timeout=60) as client:
            number = 0
            while not stop.is_set():
                doc_id = f"late-{number}"
                try:
                    client.upsert([{"id": doc_id, "text": f"late document number {number} about vaccines"}])
                    written.append(doc_id)
                except Exception as err:  # noqa: BLE001 - collected and asserted below
                    failures.append(repr(err))
                number += 1
                time.sleep(0.05)

    writer = threading.Thread(target=upsert_loop)
    writer.start()
    try:
        set_current(models_dir, "v3")
        reloaded = running.client.reload()
    finally:
        stop.set()
        writer.join(timeout=60)
    running.client.upsert(DOCUMENTS[3:])

    assert failures == []
    assert reloaded.previous_bundle_version == "v1"
    assert reloaded.bundle_version == "v3"
    info = running.client.info()
    assert info.retriever.version != old_retriever
    new_directory = index_dir / f"retriever-{info.retriever.version}"
    assert (index_dir / ACTIVE_STORE_FILE).read_text().strip() == new_directory.name
    assert running.client.stats().data_dir == str(new_directory.resolve())
    expected = {d["id"] for d in DOCUMENTS} | set(written)
    assert running.client.stats().documents == len(expected)
    found = running.client.search("vaccines", top_k=len(expected), top_n=len(expected))
    assert {r.id for r in found} == expected
    assert old_directory.is_dir()


def test_restart_fills_bundle_index_from_store_of_record(
    start_server, tmp_path: pathlib.Path, models_dir: pathlib.Path, reward_model_dir: pathlib.Path,
    tuned_retriever: pathlib.Path,
) -> None:
    index_dir = tmp_path / "index"
    plain = start_server(index_dir=index_dir)
    plain.client.upsert(DOCUMENTS)
    plain.stop()

    # First start with a bundle: the store written without bundles is the source.
    bundled = start_server(models_dir=str(models_dir), index_dir=index_dir, backend="fp32")
    bundled.client.upsert([{"id": "added", "text": "added while serving bundle v1"}])
    first = bundled.client.stats().data_dir
    bundled.stop()

    # Restart on a bundle with another retriever: the active store of the last run is the source.
    make_bundle(models_dir, "v3", reward_model_dir, retriever_dir=tuned_retriever)
    set_current(models_dir, "v3")
    restarted = start_server(models_dir=str(models_dir), index_dir=index_dir, backend="fp32")

    stats = restarted.client.stats()
    assert first != str(index_dir.resolve())
    assert stats.data_dir not in (first, str(index_dir.resolve()))
    assert stats.documents == len(DOCUMENTS) + 1
    found = restarted.client.search("vaccines", top_k=10, top_n=10)
    assert {r.id for r in found} == {d["id"] for d in DOCUMENTS} | {"added"}


def test_reload_broken_bundle_keeps_old_serving(
    start_server, models_dir: pathlib.Path, reward_model_dir: pathlib.Path
) -> None:
    broken = make_bundle(models_dir, "broken", reward_model_dir)
    (broken.reward_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    running = start_server(models_dir=str(models_dir), backend="fp32")
    set_current(models_dir, "broken")

    with pytest.raises(FailedPreconditionError) as raised:
        running.client.reload()

    message = raised.value.message
    assert message.startswith("FAILED_PRECONDITION: reload failed, still serving bundle v1: reward_model: ")
    assert message.endswith(f"fix the bundle that {models_dir}/current points to and reload again")
    info = running.client.info()
    assert info.bundle_version == "v1"
    assert info.last_reload_error.startswith(f"reward_model: {broken.reward_dir} did not load")
    response = running.client.rerank(QUERY, [d["text"] for d in DOCUMENTS])
    assert len(response.results) == 4

    set_current(models_dir, "v2")
    assert running.client.reload().bundle_version == "v2"
    assert running.client.info().last_reload_error == ""


def test_reload_without_models_dir_rejected(shared_server) -> None:
    with pytest.raises(FailedPreconditionError) as raised:
        shared_server.client.reload()

    assert raised.value.message == (
        "FAILED_PRECONDITION: reload needs a models directory with a 'current' bundle; start the server "
        "with models_dir (PREFRANK_MODELS_DIR) set"
    )


class _RecordingRuntime:
    """Stands in for a Runtime in ServiceState: records close() and nothing else."""

    def __init__(self, name: str) -> None:
        self.bundle_version = name
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def test_state_closes_replaced_runtime_after_last_lease() -> None:
    state = ServiceState()
    old, new = _RecordingRuntime("old"), _RecordingRuntime("new")
    state.set_ready(old)

    with state.lease() as held:
        state.swap(new)
        time.sleep(0.2)
        assert held is old
        assert not old.closed.is_set()
        with state.lease() as fresh:
            assert fresh is new
    assert old.closed.wait(5)
    assert not new.closed.is_set()


def test_state_writes_wait_for_paused_gate() -> None:
    state = ServiceState()
    old, new = _RecordingRuntime("old"), _RecordingRuntime("new")
    state.set_ready(old)
    used: list[str] = []

    def write() -> None:
        with state.lease(write=True) as runtime:
            used.append(runtime.bundle_version)

    with state.writes_paused():
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.2)
        assert used == []
        state.swap(new)
    writer.join(timeout=5)

    assert used == ["new"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sighup_reloads_current_bundle(tmp_path: pathlib.Path, models_dir: pathlib.Path) -> None:
    port = _free_port()
    environment = {
        **os.environ, "HF_HUB_OFFLINE": "1", "PREFRANK_HOST": "127.0.0.1", "PREFRANK_PORT": str(port),
        "PREFRANK_MODELS_DIR": str(models_dir), "PREFRANK_INDEX_DIR": str(tmp_path / "index"),
        "PREFRANK_BACKEND": "fp32", "PREFRANK_WORKERS": "4",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "prefrank.server"], cwd=REPO, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        with PrefrankClient(f"127.0.0.1:{port}", timeout=30) as client:
            client.wait_until_serving(timeout=180)
            assert client.info().bundle_version == "v1"

            set_current(models_dir, "v2")
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 120
            while client.info().bundle_version != "v2" and time.monotonic() < deadline:
                time.sleep(0.3)

            assert client.info().bundle_version == "v2"
            assert client.rerank(QUERY, ["vaccines use antigens"]).results[0].relevance_score > 0
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log_path.read_text()[-3000:]
    assert "Reloaded in" in log_path.read_text()
