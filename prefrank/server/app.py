"""Server lifecycle: build, load models in the background, serve, snapshot, stop gracefully."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from prefrank.config import ServerConfig
from prefrank.errors import ConfigError, PrefrankError
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.reloading import mark_active_store
from prefrank.runtime import load_runtime
from prefrank.server.interceptors import ApiKeyInterceptor, ErrorInterceptor
from prefrank.server.reload import Reloader
from prefrank.server.servicer import IndexServicer, ModelsServicer, RerankerServicer, ServiceState

logger = logging.getLogger(__name__)

SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in ("Reranker", "Index", "Models"))


def format_address(host: str, port: int) -> str:
    """Return host:port, bracketing IPv6 literals."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class PrefrankServer:
    """The gRPC server with its health service, reflection and background model loading.

    Health reports NOT_SERVING for the overall server ("") and each prefrank service until the
    models and the index are loaded and warmed, then SERVING.

    Args:
        config: Service settings.

    Example:
        >>> server = PrefrankServer(ServerConfig.from_env(port=0))
        >>> server.start()
        >>> server.wait_until_ready(timeout=120)
        >>> server.stop()
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.state = ServiceState()
        self.reloader = Reloader(config, self.state)
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._snapshot_thread: threading.Thread | None = None

        interceptors: list[grpc.ServerInterceptor] = [ErrorInterceptor()]
        if config.api_key:
            interceptors.insert(0, ApiKeyInterceptor(config.api_key))
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="grpc"),
            interceptors=interceptors, options=options,
        )
        pb_grpc.add_RerankerServicer_to_server(RerankerServicer(self.state), self._server)
        pb_grpc.add_IndexServicer_to_server(IndexServicer(self.state), self._server)
        pb_grpc.add_ModelsServicer_to_server(ModelsServicer(self.state, self.reloader), self._server)

        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server,
        )

        address = format_address(config.host, config.port)
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as err:
            raise ConfigError(f"could not bind {address}: {err}; is the port in use?") from err
        if self.port == 0:
            raise ConfigError(f"could not bind {address}; is the port in use?")
        self.address = format_address(config.host, self.port)

    # --- lifecycle ---

    def start(self) -> None:
        """Start serving (health NOT_SERVING) and load the models on a background thread."""
        self._server.start()
        logger.info("Listening on %s; loading models and index", self.address)
        threading.Thread(target=self._load, name="prefrank-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            runtime = load_runtime(self.config)
        except PrefrankError as err:
            logger.error("Start-up failed: %s", err.message)
            self.state.set_failed(err.message)
            self._ready.set()
            return
        except Exception as err:  # noqa: BLE001 - report any loader crash through health and logs
            logger.exception("Start-up failed")
            self.state.set_failed(f"start-up failed: {err}")
            self._ready.set()
            return
        self.state.set_ready(runtime)
        mark_active_store(runtime.config, runtime.index)
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._ready.set()
        self._snapshot_thread = threading.Thread(target=self._snapshot_loop, name="prefrank-snapshot", daemon=True)
        self._snapshot_thread.start()
        logger.info("Serving on %s", self.address)

    @property
    def loading_done(self) -> bool:
        """True once loading finished, whether it succeeded or failed."""
        return self._ready.is_set()

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until loading finished; return True when serving, False when loading failed."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"models did not load within {timeout} s")
        return self.state.runtime is not None

    def _snapshot_loop(self) -> None:
        interval = self.config.snapshot_seconds
        if interval == 0:
            return
        while not self._stopped.wait(interval):
            runtime = self.state.runtime
            if runtime is None:
                return
            try:
                runtime.index.snapshot()
            except Exception:  # noqa: BLE001 - a failed snapshot must not stop serving; SQLite has the data
                logger.exception("FAISS snapshot failed; will retry in %.0f s", interval)

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight calls finish within grace seconds, save the index."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_seconds if grace is None else grace
        logger.info("Stopping: %.0f s grace for in-flight requests", grace)
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        runtime = self.state.clear()
        if runtime is not None:
            runtime.close()
        logger.info("Stopped")

    def wait_for_termination(self) -> None:
        self._server.wait_for_termination()


def serve(config: ServerConfig) -> int:
    """Run the server until SIGTERM or SIGINT; return the process exit code."""
    server = PrefrankServer(config)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("Received %s", signal.Signals(signum).name)
        stop_requested.set()

    def request_reload(signum: int, _frame: object) -> None:
        # The handler runs on the main thread between bytecodes: hand the slow reload to a thread.
        logger.info("Received %s; reloading the 'current' bundle", signal.Signals(signum).name)
        threading.Thread(target=server.reloader.reload_logged, name="prefrank-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    server.start()

    # Wait for loading, then for a signal. A failed start-up stops the process with exit code 1.
    while not server.loading_done and not stop_requested.wait(0.2):
        pass
    if server.loading_done and server.state.runtime is None:
        server.stop(grace=0)
        return 1
    while not stop_requested.wait(1.0):
        pass
    server.stop()
    return 0
