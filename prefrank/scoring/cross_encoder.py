"""The reward model: a sentence-transformers CrossEncoder with one output logit r(q, d)."""

from __future__ import annotations

import logging
import pathlib
import threading
import time
from collections.abc import Sequence

import numpy as np

from prefrank.artifacts import model_version, resolve_model_dir
from prefrank.batching import BatcherConfig, DynamicBatcher, Pair
from prefrank.errors import ModelLoadError
from prefrank.retrieval.encoder import ModelDescription
from prefrank.scoring.backends import (
    PARITY_SAMPLE,
    ParityReport,
    build_backend,
    compare_scores,
    cpu_supports_bf16,
)
from prefrank.scoring.base import ScoreBatch, Scorer

logger = logging.getLogger(__name__)


class CrossEncoderScorer(Scorer):
    """Scores (query, text) pairs with a cross-encoder's raw logit.

    ``relevance`` is sigmoid(logit): under the Bradley-Terry model, sigmoid(r(q, a) - r(q, b)) is
    the probability that a is preferred to b, and sigmoid(r) is a fixed monotone map into [0, 1].
    Concurrent calls share forward passes through a DynamicBatcher.

    Args:
        path: A directory saved by ``CrossEncoder.save`` with a single output label.
        device: torch device.
        backend: "fp32", "bf16", "int8", or "auto" (bf16 where the CPU supports it). A backend
            other than fp32 serves only after it passes the parity check against fp32;
            otherwise the scorer falls back to fp32 and logs why.
        batcher: Batch and queue limits.

    Raises:
        ModelLoadError: the directory does not load or the model has more than one output.
    """

    kind = "cross-encoder"

    def __init__(
        self,
        path: str | pathlib.Path,
        device: str = "cpu",
        backend: str = "auto",
        batcher: BatcherConfig | None = None,
    ) -> None:
        from sentence_transformers import CrossEncoder

        # Load
        directory = resolve_model_dir(path, "reward_model")
        try:
            self._model = CrossEncoder(str(directory), device=device, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - any loader failure must become a clear start-up error
            raise ModelLoadError(f"reward_model: {directory} did not load: {err}") from err
        if self._model.num_labels != 1:
            raise ModelLoadError(
                f"reward_model: CrossEncoder at {directory} has {self._model.num_labels} outputs; "
                "a reward model needs exactly 1 (num_labels=1)"
            )
        self._model.eval()
        self._max_length = int(self._model.max_seq_length)
        # A fast tokenizer keeps its padding and truncation settings as shared state, so a call
        # from a request thread while the batcher pads a batch yields ragged, unpaddable features.
        self._tokenizer_lock = threading.Lock()

        # Choose the inference backend
        self._runner = self._model
        self.backend, self.parity = self._select_backend(backend)

        self._batcher = DynamicBatcher(self._forward, batcher or BatcherConfig(), name="reward-batcher")
        self._description = ModelDescription(
            name=directory.name, version=model_version(directory), path=str(directory), embedding_dim=0,
            max_length=self._max_length, backend=self.backend, parity=str(self.parity or ""),
        )
        logger.info("Loaded reward model %s (version %s, max length %d, backend %s) from %s",
                    directory.name, self._description.version, self._max_length, self.backend, directory)

    def _select_backend(self, requested: str) -> tuple[str, ParityReport | None]:
        if requested == "fp32":
            return "fp32", None
        selected = "bf16" if requested == "auto" else requested
        if selected == "bf16" and not cpu_supports_bf16():
            logger.info("CPU has no AVX512-BF16 or AMX-BF16 instructions; the reward model runs in fp32")
            return "fp32", None
        runner, _ = build_backend(self._model, selected)
        reference = [self._score_direct(self._model, q, c) for q, c in PARITY_SAMPLE]
        started = time.perf_counter()
        candidate = [self._score_direct(runner, q, c) for q, c in PARITY_SAMPLE]
        report = compare_scores(reference, candidate)
        if not report.passed:
            logger.warning("Backend %s failed the parity check against fp32 (%s); serving fp32 instead",
                           selected, report)
            return "fp32", report
        logger.info("Backend %s passed the parity check (%s) in %.2f s", selected, report,
                    time.perf_counter() - started)
        self._runner = runner
        return selected, report

    def _score_direct(self, runner: object, query: str, texts: Sequence[str]) -> np.ndarray:
        return self._run(runner, [(query, t) for t in texts])

    def _run(self, runner: object, pairs: Sequence[Pair]) -> np.ndarray:
        """Score one batch with a model: the same preprocess and forward steps as CrossEncoder.predict."""
        import torch

        with torch.inference_mode():
            with self._tokenizer_lock:
                features = self._model.preprocess(list(pairs))
            scores = runner(features)["scores"]
        return scores.float().reshape(-1).cpu().numpy().astype(np.float64)

    def _forward(self, pairs: Sequence[Pair]) -> np.ndarray:
        return self._run(self._runner, pairs)

    @property
    def description(self) -> ModelDescription:
        return self._description

    def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> ScoreBatch:
        if not texts:
            return ScoreBatch(np.zeros(0), [])
        with self._tokenizer_lock:
            encoded = self._model.tokenizer([query] * len(texts), list(texts), truncation=False, verbose=False)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        scores = self._batcher.submit(
            [(query, text) for text in texts], [min(n, self._max_length) for n in lengths], deadline
        )
        return ScoreBatch(scores, [n > self._max_length for n in lengths])

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))

    def close(self) -> None:
        self._batcher.close()
