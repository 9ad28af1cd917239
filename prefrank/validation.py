"""Request checks shared by every caller. Each failure names the field, the limit and the value."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from prefrank.errors import InvalidArgumentError
from prefrank.retrieval.document_store import filter_kind


def check_text(field: str, text: str, max_chars: int) -> None:
    """Reject empty or whitespace-only text and text longer than max_chars characters."""
    if not text.strip():
        raise InvalidArgumentError(f"{field}: must not be empty")
    if len(text) > max_chars:
        raise InvalidArgumentError(
            f"{field}: {len(text)} characters exceeds the limit of {max_chars} (max_text_chars)"
        )


def check_count(field: str, count: int, limit: int, noun: str) -> None:
    """Reject zero items and more than limit items."""
    if count == 0:
        raise InvalidArgumentError(f"{field}: at least one {noun} is required")
    if count > limit:
        raise InvalidArgumentError(
            f"{field}: {count} {noun}s exceeds the limit of {limit} (max_candidates)"
        )


def check_unique_ids(field: str, ids: Sequence[str], id_field: str = ".id") -> None:
    """Reject empty ids and ids that occur more than once.

    Args:
        id_field: Suffix that names the id within one item: ".id" for messages with an id field,
            "" for a plain list of ids.
    """
    seen: set[str] = set()
    for position, item_id in enumerate(ids):
        if not item_id:
            raise InvalidArgumentError(f"{field}[{position}]{id_field}: must not be empty")
        if item_id in seen:
            raise InvalidArgumentError(f"{field}[{position}]{id_field}: duplicate id {item_id!r}; ids must be unique")
        seen.add(item_id)


def check_non_negative(field: str, value: int, limit: int | None = None) -> None:
    """Reject negative values and, with a limit, values above it."""
    if value < 0:
        raise InvalidArgumentError(f"{field}: must be >= 0, got {value}")
    if limit is not None and value > limit:
        raise InvalidArgumentError(f"{field}: {value} exceeds the limit of {limit} (max_candidates)")


def check_score(field: str, value: float | None) -> None:
    """Reject NaN and infinite first-stage scores."""
    if value is not None and not math.isfinite(value):
        raise InvalidArgumentError(f"{field}: must be a finite number, got {value}")


def check_filters(filters: Mapping[str, Any]) -> None:
    """Reject filter values that are not strings, numbers or booleans, and empty keys."""
    for key, value in filters.items():
        if not key:
            raise InvalidArgumentError("filter: keys must not be empty")
        filter_kind(key, value)
