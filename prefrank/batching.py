"""Dynamic micro-batching: concurrent requests share model forward passes.

Each request submits its (query, text) pairs as one job. A single worker thread takes every job
that arrives within ``max_wait_ms`` of the first and sorts all their pairs by token length, so
each batch pads little. It then cuts batches by a token budget, runs the model and routes each
score back to its job. Pairs of one job may land in several batches, and one batch may serve several jobs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from prefrank.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError

logger = logging.getLogger(__name__)

Pair = tuple[str, str]
ForwardFn = Callable[[Sequence[Pair]], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class BatcherConfig:
    """Limits of the dynamic batcher."""

    max_batch_tokens: int = field(default=8192, metadata={"help": "padded tokens per forward pass"})
    max_batch_pairs: int = field(default=64, metadata={"help": "pairs per forward pass"})
    max_wait_ms: float = field(default=2.0, metadata={"help": "how long the first job waits for others"})
    max_queued_pairs: int = field(default=20_000, metadata={"help": "pairs waiting before RESOURCE_EXHAUSTED"})

    def __post_init__(self) -> None:
        if self.max_batch_tokens <= 0 or self.max_batch_pairs <= 0 or self.max_queued_pairs <= 0:
            raise ValueError("max_batch_tokens, max_batch_pairs and max_queued_pairs must be > 0")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


@dataclass
class _Job:
    pairs: Sequence[Pair]
    lengths: Sequence[int]
    deadline: float | None
    future: Future = field(default_factory=Future)
    scores: np.ndarray | None = None
    remaining: int = 0


def _resolve(future: Future, result: np.ndarray | None = None, error: BaseException | None = None) -> None:
    """Complete a future unless its caller already gave up on it (cancelled after a timeout)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_pairs: int) -> list[list[int]]:
    """Group item indices into batches, longest first, so that count * longest <= max_batch_tokens.

    An item longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Items come longest first, so the first item of a batch sets its padded length.
        longest = lengths[current[0]] if current else lengths[index]
        if current and ((len(current) + 1) * longest > max_batch_tokens or len(current) >= max_batch_pairs):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class DynamicBatcher:
    """Shares model forward passes between concurrent requests.

    Args:
        forward: Scores a batch of pairs; returns a float array of shape (len(pairs),).
        config: Batch and queue limits.
        name: Thread name, for logs.

    Example:
        >>> batcher = DynamicBatcher(lambda pairs: np.zeros(len(pairs)), BatcherConfig())
        >>> batcher.submit([("q", "d")], [3])
        array([0.])
    """

    def __init__(self, forward: ForwardFn, config: BatcherConfig, name: str = "batcher") -> None:
        self._forward = forward
        self.config = config
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._queued_pairs = 0
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, pairs: Sequence[Pair], lengths: Sequence[int], deadline: float | None = None) -> np.ndarray:
        """Score pairs and block until done.

        Args:
            pairs: (query, text) pairs.
            lengths: Token count of each pair after truncation; used to form batches.
            deadline: ``time.monotonic()`` value after which the request is abandoned.

        Returns:
            float64 array of shape (len(pairs),).

        Raises:
            ResourceExhaustedError: the queue already contains max_queued_pairs pairs.
            DeadlineExceededError: the deadline passed before the scores were ready.
            UnavailableError: the batcher is closed.
        """
        if not pairs:
            return np.zeros(0)
        job = _Job(pairs, lengths, deadline, remaining=len(pairs))
        with self._lock:
            if self._closed:
                raise UnavailableError("scorer is shutting down; retry on another replica")
            if self._queued_pairs + len(pairs) > self.config.max_queued_pairs:
                raise ResourceExhaustedError(
                    f"scoring queue is full ({self._queued_pairs} pairs waiting, limit "
                    f"{self.config.max_queued_pairs}); retry with backoff or send fewer candidates"
                )
            self._queued_pairs += len(pairs)
        self._jobs.put(job)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return job.future.result(timeout=timeout)
        except TimeoutError as err:
            job.future.cancel()
            raise DeadlineExceededError(
                f"deadline exceeded after queueing {len(pairs)} pairs; raise the deadline or send fewer candidates"
            ) from err

    def close(self) -> None:
        """Finish the queued jobs, then stop the worker thread."""
        with self._lock:
            self._closed = True
        self._jobs.put(None)
        self._thread.join()

    # --- worker ---

    def _collect(self) -> list[_Job] | None:
        """Block for one job, then take every job that arrives within max_wait_ms."""
        first = self._jobs.get()
        if first is None:
            return None
        jobs = [first]
        wait_until = time.monotonic() + self.config.max_wait_ms / 1e3
        while True:
            remaining = wait_until - time.monotonic()
            try:
                job = self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
            except queue.Empty:
                return jobs
            if job is None:
                self._jobs.put(None)  # seen again after this window, so queued jobs still finish
                return jobs
            jobs.append(job)

    def _run(self) -> None:
        while (jobs := self._collect()) is not None:
            live = self._drop_expired(jobs)
            items = [(job, i) for job in live for i in range(len(job.pairs))]
            lengths = [job.lengths[i] for job, i in items]
            for job in live:
                job.scores = np.zeros(len(job.pairs))
            for batch in plan_batches(lengths, self.config.max_batch_tokens, self.config.max_batch_pairs):
                members = [items[k] for k in batch]
                try:
                    scores = self._forward([job.pairs[i] for job, i in members])
                except Exception as err:  # noqa: BLE001 - the error goes to every caller in this batch
                    logger.exception("Forward pass failed for a batch of %d pairs", len(members))
                    for job in {id(j): j for j, _ in members}.values():
                        _resolve(job.future, error=err)
                    continue
                for (job, i), score in zip(members, scores, strict=True):
                    job.scores[i] = score
                    job.remaining -= 1
                    if job.remaining == 0:
                        _resolve(job.future, job.scores)
            with self._lock:
                self._queued_pairs -= sum(len(job.pairs) for job in jobs)

    def _drop_expired(self, jobs: list[_Job]) -> list[_Job]:
        now = time.monotonic()
        live = []
        for job in jobs:
            if job.future.cancelled():
                continue
            if job.deadline is not None and job.deadline <= now:
                _resolve(job.future, error=DeadlineExceededError("deadline exceeded before scoring started"))
                continue
            live.append(job)
        return live
