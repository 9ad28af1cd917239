"""Cross-cutting gRPC concerns: error-to-status mapping, authentication, latency logging."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from prefrank import errors

logger = logging.getLogger(__name__)

# The one place where domain errors become gRPC status codes.
STATUS_CODES: dict[type[errors.PrefrankError], grpc.StatusCode] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
}

# Methods that stay reachable without credentials, so probes and tooling work.
PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def status_code(error: errors.PrefrankError) -> grpc.StatusCode:
    """Return the status code for a domain error; unknown subclasses map to INTERNAL."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def _wrap_handler(handler: grpc.RpcMethodHandler, wrap: Callable) -> grpc.RpcMethodHandler:
    """Return a copy of handler whose behaviour is wrapped by wrap(behaviour, streaming)."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary, False), handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, True), handler.request_deserializer, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, False), handler.request_deserializer, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(
        wrap(handler.stream_stream, True), handler.request_deserializer, handler.response_serializer)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turn PrefrankError into its status code and anything else into a generic INTERNAL.

    Callers never see a stack trace: unexpected errors are logged here with the method name and
    the traceback, and the caller gets "internal error" only. Latency is logged at DEBUG.
    """

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def wrap(behaviour: Callable, streaming: bool) -> Callable:
            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    return behaviour(request, context)
                except errors.PrefrankError as err:
                    context.abort(status_code(err), err.message)
                except Exception:
                    if context.code() is not None:  # already aborted by the servicer
                        raise
                    logger.exception("Unhandled error in %s", method)
                    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")
                finally:
                    logger.debug("%s took %.1f ms", method, (time.perf_counter() - started) * 1e3)

            def stream(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    yield from behaviour(request, context)
                except errors.PrefrankError as err:
                    context.abort(status_code(err), err.message)
                except Exception:
                    if context.code() is not None:
                        raise
                    logger.exception("Unhandled error in %s", method)
                    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")

            return stream if streaming else unary

        return _wrap_handler(handler, wrap)


class ApiKeyInterceptor(grpc.ServerInterceptor):
    """Reject calls without 'authorization: Bearer <api_key>' metadata (health and reflection exempt)."""

    def __init__(self, api_key: str) -> None:
        self._expected = f"Bearer {api_key}".encode()

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        if method.startswith(PUBLIC_METHOD_PREFIXES):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)

        handler = continuation(handler_call_details)
        if handler is None:
            return None
        reason = "missing 'authorization' metadata" if not given else "invalid API key"

        def wrap(_behaviour: Callable, _streaming: bool) -> Callable:
            def deny(_request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{reason}; send 'authorization: Bearer <key>'")

            return deny

        return _wrap_handler(handler, wrap)
