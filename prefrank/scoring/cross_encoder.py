"""The reward model: a sentence-transformers CrossEncoder with one output logit r(q, d)."""

from __future__ import annotations

import logging
import pathlib
import threading
from collections.abc import Sequence

import numpy as np

from prefrank.artifacts import model_version, resolve_model_dir
from prefrank.errors import ModelLoadError
from prefrank.retrieval.encoder import ModelDescription
from prefrank.scoring.base import ScoreBatch, Scorer

logger = logging.getLogger(__name__)


class CrossEncoderScorer(Scorer):
    """Scores (query, text) pairs with a cross-encoder's raw logit.

    ``relevance`` is sigmoid(logit): under the Bradley-Terry model, sigmoid(r(q, a) - r(q, b)) is
    the probability that a is preferred to b, and sigmoid(r) is a fixed monotone map into [0, 1].

    Args:
        path: A directory saved by ``CrossEncoder.save`` with a single output label.
        device: torch device.
        batch_size: Pairs per forward pass.

    Raises:
        ModelLoadError: the directory does not load or the model has more than one output.
    """

    kind = "cross-encoder"

    def __init__(self, path: str | pathlib.Path, device: str = "cpu", batch_size: int = 32) -> None:
        import torch
        from sentence_transformers import CrossEncoder

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
        self._identity = torch.nn.Identity()
        self._batch_size = batch_size
        # NOTE: one forward pass at a time; torch already spreads one batch over every core.
        self._lock = threading.Lock()
        self._description = ModelDescription(
            name=directory.name,
            version=model_version(directory),
            path=str(directory),
            embedding_dim=0,
            max_length=int(self._model.max_seq_length),
        )
        logger.info("Loaded reward model %s (version %s, max length %d) from %s",
                    directory.name, self._description.version, self._description.max_length, directory)

    @property
    def description(self) -> ModelDescription:
        return self._description

    def score(self, query: str, texts: Sequence[str]) -> ScoreBatch:
        if not texts:
            return ScoreBatch(np.zeros(0), [])
        pairs = [(query, text) for text in texts]
        with self._lock:
            logits = self._model.predict(
                pairs, batch_size=self._batch_size, activation_fn=self._identity,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return ScoreBatch(np.asarray(logits, dtype=np.float64).reshape(-1), self._truncated(query, texts))

    def _truncated(self, query: str, texts: Sequence[str]) -> list[bool]:
        encoded = self._model.tokenizer([query] * len(texts), list(texts), truncation=False)
        return [len(ids) > self._description.max_length for ids in encoded["input_ids"]]

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))
