"""The prefrank error hierarchy. The gRPC layer maps each class to one status code."""

from __future__ import annotations


class PrefrankError(Exception):
    """Base class of every error prefrank raises on purpose.

    Args:
        message: What failed, on which value, and what to do next. Sent to gRPC callers as is,
            so it must never contain a stack trace or a secret.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(PrefrankError):
    """A request field is missing, malformed or over a configured limit."""


class NotFoundError(PrefrankError):
    """A requested document or model does not exist."""


class ResourceExhaustedError(PrefrankError):
    """The server is over capacity for this request (queue full, message too large)."""


class UnavailableError(PrefrankError):
    """The server cannot serve yet (models loading, index warming) or is shutting down."""


class UnauthenticatedError(PrefrankError):
    """The request lacks valid credentials."""


class DeadlineExceededError(PrefrankError):
    """The request's deadline passed before its work finished."""


class ConfigError(PrefrankError):
    """A setting is invalid; raised at start-up, before the server accepts requests."""


class ModelLoadError(PrefrankError):
    """A model directory is missing or does not load."""


class IndexCorruptError(PrefrankError):
    """The stored index or document store does not load and cannot be rebuilt."""


class FailedPreconditionError(PrefrankError):
    """The system is not in a state the operation needs, e.g. a model bundle that does not load.

    Retrying the same call does not help until that state is fixed.
    """


class PromotionRejectedError(PrefrankError):
    """A candidate model bundle scores worse than the current one beyond the allowed tolerance."""
