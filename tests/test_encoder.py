"""The bi-encoder: normalised embeddings, truncation flags and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from prefrank.artifacts import bundled_retriever_path
from prefrank.retrieval import encoder as encoder_module
from prefrank.retrieval.encoder import BiEncoder


@pytest.fixture(scope="module")
def encoder() -> BiEncoder:
    return BiEncoder(bundled_retriever_path())


def test_encoder_vectors_have_unit_norm(encoder):
    vectors = encoder.encode(["Paris is the capital of France.", "巴黎是法国的首都。", ""])

    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)


def test_encoder_cached_equals_uncached(encoder):
    texts = ["first text", "第二个文本", "first text", "third text"]

    direct = encoder.encode(texts)
    cold = encoder.encode_cached(texts)
    warm = encoder.encode_cached(texts)

    np.testing.assert_array_equal(cold, direct)
    np.testing.assert_array_equal(warm, direct)


def test_encoder_cache_evicts_oldest(encoder, monkeypatch):
    monkeypatch.setattr(encoder_module, "EMBEDDING_CACHE_SIZE", 3)
    encoder._cache.clear()

    encoder.encode_cached(["a", "b", "c", "d"])

    assert list(encoder._cache) == ["b", "c", "d"]


def test_encoder_truncation_flags(encoder):
    flags = encoder.truncated(["short text", "word " * 400])

    assert flags == [False, True]
