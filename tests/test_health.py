"""Health and reflection: NOT_SERVING until the models and index are warm, SERVING after, reflection lists all."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Iterator

import grpc
import pytest
from conftest import RunningServer, make_config
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import prefrank.server.app
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.server.app import SERVICE_NAMES, PrefrankServer

HEALTH_NAMES = ("", "prefrank.v1.Reranker", "prefrank.v1.Index", "prefrank.v1.Models")
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def _health(channel: grpc.Channel, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=30).status


def _rerank_error(channel: grpc.Channel) -> grpc.RpcError:
    request = pb.RerankRequest(query="a query", candidates=[pb.Candidate(id="a", text="a candidate")])
    with pytest.raises(grpc.RpcError) as raised:
        pb_grpc.RerankerStub(channel).Rerank(request, timeout=30)
    return raised.value


@pytest.fixture
def gated_server(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PrefrankServer, threading.Event]]:
    """A server whose real model loading waits until the test sets the returned event."""
    release = threading.Event()
    real_load = prefrank.server.app.load_runtime

    def gated_load(config: object) -> object:
        if not release.wait(timeout=300):
            raise TimeoutError("test never released the loader")
        return real_load(config)

    monkeypatch.setattr(prefrank.server.app, "load_runtime", gated_load)
    server = PrefrankServer(make_config(tmp_path / "data"))
    server.start()
    yield server, release
    release.set()
    server.wait_until_ready(timeout=300)
    server.stop(grace=0)


def test_health_not_serving_then_serving(gated_server: tuple[PrefrankServer, threading.Event]) -> None:
    server, release = gated_server
    with grpc.insecure_channel(server.address) as channel:
        for name in HEALTH_NAMES:
            assert _health(channel, name) == NOT_SERVING, name

        release.set()
        assert server.wait_until_ready(timeout=300) is True

        for name in HEALTH_NAMES:
            assert _health(channel, name) == SERVING, name


def test_health_unknown_service_not_found(shared_server: RunningServer) -> None:
    with grpc.insecure_channel(shared_server.server.address) as channel, pytest.raises(grpc.RpcError) as raised:
        _health(channel, "prefrank.v1.NoSuchService")

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_rpc_before_warm_up_unavailable(gated_server: tuple[PrefrankServer, threading.Event]) -> None:
    server, _release = gated_server
    message = "server not ready: models and index are still loading; retry later or watch grpc.health.v1.Health"
    with grpc.insecure_channel(server.address) as channel:
        error = _rerank_error(channel)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == message

        for method, request in [
            (pb_grpc.RerankerStub(channel).Search, pb.SearchRequest(query="a query")),
            (pb_grpc.IndexStub(channel).Stats, pb.StatsRequest()),
            (pb_grpc.ModelsStub(channel).GetInfo, pb.GetInfoRequest()),
        ]:
            with pytest.raises(grpc.RpcError) as raised:
                method(request, timeout=30)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert raised.value.details() == message


def _missing_reward_model(tmp_path: pathlib.Path) -> tuple[dict, str]:
    model_dir = tmp_path / "not-a-model"
    model_dir.mkdir()
    message = (f"reward_model: {model_dir.resolve()} has no config.json; expected a sentence-transformers "
               "or Hugging Face model directory (as written by model.save())")
    return {"reward_model": str(model_dir)}, message


def _missing_retriever(tmp_path: pathlib.Path) -> tuple[dict, str]:
    missing = tmp_path / "missing-model"
    return {"retriever_model": str(missing)}, f"retriever_model: model directory {missing.resolve()} does not exist"


def _corrupt_document_store(tmp_path: pathlib.Path) -> tuple[dict, str]:
    store = tmp_path / "data" / "documents.sqlite3"
    store.parent.mkdir()
    store.write_bytes(b"this is not an SQLite database" * 100)
    return {}, f"document store {store} does not open: file is not a database"


@pytest.mark.parametrize("case", [_missing_retriever, _missing_reward_model, _corrupt_document_store],
                         ids=["retriever", "reward-model", "document-store"])
def test_failed_model_load_keeps_not_serving(tmp_path: pathlib.Path, case: object) -> None:
    overrides, reason = case(tmp_path)  # type: ignore[operator]
    server = PrefrankServer(make_config(tmp_path / "data", **overrides))
    server.start()
    try:
        assert server.wait_until_ready(timeout=300) is False

        with grpc.insecure_channel(server.address) as channel:
            for name in HEALTH_NAMES:
                assert _health(channel, name) == NOT_SERVING, name
            error = _rerank_error(channel)

        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == f"server not ready: {reason}; retry later or watch grpc.health.v1.Health"
    finally:
        server.stop(grace=0)


def test_reflection_lists_services(shared_server: RunningServer) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(shared_server.server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(stub.ServerReflectionInfo(iter([request]), timeout=30))

    names = {service.name for service in responses[0].list_services_response.service}
    assert names == {"prefrank.v1.Reranker", "prefrank.v1.Index", "prefrank.v1.Models",
                     "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    assert set(SERVICE_NAMES) <= names


def test_reflection_describes_rpc_methods(shared_server: RunningServer) -> None:
    with grpc.insecure_channel(shared_server.server.address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        reranker = pool.FindServiceByName("prefrank.v1.Reranker")
        index = pool.FindServiceByName("prefrank.v1.Index")
        models = pool.FindServiceByName("prefrank.v1.Models")
        rerank_request = pool.FindMessageTypeByName("prefrank.v1.RerankRequest")

    # Reflection must serve the same API as the compiled stubs, method by method.
    for served in (reranker, index, models):
        compiled = pb.DESCRIPTOR.services_by_name[served.name]
        assert [m.name for m in served.methods] == [m.name for m in compiled.methods]
        assert [m.input_type.full_name for m in served.methods] == [m.input_type.full_name for m in compiled.methods]
    assert {"Rerank", "Search"} <= {m.name for m in reranker.methods}
    assert [m.name for m in index.methods] == ["Upsert", "Delete", "Stats"]
    assert "GetInfo" in [m.name for m in models.methods]
    assert [f.name for f in rerank_request.fields] == [f.name for f in pb.RerankRequest.DESCRIPTOR.fields]
