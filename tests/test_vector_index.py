"""FAISS index against exact numpy search, snapshots, and rebuilding a stale snapshot from SQLite."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from prefrank.artifacts import bundled_retriever_path
from prefrank.retrieval.document_store import STORE_FILE
from prefrank.retrieval.encoder import BiEncoder
from prefrank.retrieval.index import DocumentIndex
from prefrank.retrieval.vector_index import SNAPSHOT_POINTER, IndexSpec, VectorIndex

DIM = 64


def _unit_vectors(rng: np.random.Generator, count: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _brute_force(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def _filled(spec: IndexSpec, vectors: np.ndarray, ids: np.ndarray) -> VectorIndex:
    index = VectorIndex(spec)
    index.add(ids, vectors)
    return index


@pytest.fixture
def corpus() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2,000 random unit vectors with sparse, non-contiguous int64 ids, and 50 queries."""
    rng = np.random.default_rng(7)
    vectors = _unit_vectors(rng, 2000)
    ids = rng.choice(10**9, size=2000, replace=False).astype(np.int64)
    queries = _unit_vectors(rng, 50)
    return vectors, ids, queries


# --- search against brute force ---

def test_flat_search_equals_brute_force(corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ids, queries = corpus
    index = _filled(IndexSpec(dimension=DIM), vectors, ids)

    scores, found = index.search(queries, 10)

    expected_scores, expected_ids = _brute_force(vectors, ids, queries, 10)
    np.testing.assert_array_equal(found, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_flat_search_k_over_size_returns_all(corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ids, queries = corpus
    index = _filled(IndexSpec(dimension=DIM), vectors[:5], ids[:5])

    scores, found = index.search(queries[:1], 10)

    assert found.shape == (1, 5)
    assert sorted(found[0].tolist()) == sorted(ids[:5].tolist())
    assert scores[0].tolist() == sorted(scores[0].tolist(), reverse=True)


def test_hnsw_recall_at_10_vs_brute_force(corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ids, queries = corpus
    index = _filled(IndexSpec(dimension=DIM, index_type="hnsw", hnsw_m=16, hnsw_ef_construction=100,
                              hnsw_ef_search=128), vectors, ids)

    _scores, found = index.search(queries, 10)

    _expected_scores, expected_ids = _brute_force(vectors, ids, queries, 10)
    hits = sum(len(set(row) & set(expected)) for row, expected in zip(found.tolist(), expected_ids.tolist(),
                                                                        strict=True))
    recall = hits / expected_ids.size
    assert recall >= 0.95, f"HNSW recall@10 {recall:.3f} below 0.95"


@pytest.mark.parametrize("index_type", ["flat", "hnsw"], ids=["flat", "hnsw"])
@pytest.mark.parametrize("subset_size", [7, 600], ids=["few-allowed", "many-allowed"])
def test_filtered_search_equals_brute_force_on_subset(
    corpus: tuple[np.ndarray, np.ndarray, np.ndarray], index_type: str, subset_size: int
) -> None:
    vectors, ids, queries = corpus
    index = _filled(IndexSpec(dimension=DIM, index_type=index_type), vectors, ids)
    rng = np.random.default_rng(subset_size)
    chosen = rng.choice(len(ids), size=subset_size, replace=False)
    allowed = {int(i) for i in ids[chosen]}

    for query in queries[:10]:
        scores, found = index.search(query.reshape(1, -1), 10, allowed)

        expected_scores, expected_ids = _brute_force(vectors[chosen], ids[chosen], query.reshape(1, -1), 10)
        np.testing.assert_array_equal(found, expected_ids)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_flat_remove_drops_vectors(corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ids, queries = corpus
    index = _filled(IndexSpec(dimension=DIM), vectors, ids)
    removed = ids[:1000]

    assert index.remove(removed) == 1000

    _scores, found = index.search(queries, 10)
    _expected_scores, expected_ids = _brute_force(vectors[1000:], ids[1000:], queries, 10)
    np.testing.assert_array_equal(found, expected_ids)
    assert index.size == 1000


def test_hnsw_remove_not_supported(corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ids, _queries = corpus
    index = _filled(IndexSpec(dimension=DIM, index_type="hnsw"), vectors[:10], ids[:10])

    assert index.supports_remove is False
    with pytest.raises(NotImplementedError):
        index.remove(ids[:1])


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.zeros((2, DIM), dtype=np.float64), f"expected float32 vectors of shape (n, {DIM}), got float64 (2, {DIM})"),
        (np.zeros((2, DIM + 1), dtype=np.float32),
         f"expected float32 vectors of shape (n, {DIM}), got float32 (2, {DIM + 1})"),
        (np.zeros(DIM, dtype=np.float32), f"expected float32 vectors of shape (n, {DIM}), got float32 ({DIM},)"),
    ],
    ids=["float64", "wrong-dimension", "one-dimensional"],
)
def test_add_wrong_vectors_raises(vectors: np.ndarray, message: str) -> None:
    index = VectorIndex(IndexSpec(dimension=DIM))

    with pytest.raises(ValueError) as raised:
        index.add(np.arange(len(vectors), dtype=np.int64), vectors)

    assert str(raised.value) == message


# --- snapshots ---

@pytest.mark.parametrize("index_type", ["flat", "hnsw"], ids=["flat", "hnsw"])
def test_snapshot_round_trip(
    tmp_path: pathlib.Path, corpus: tuple[np.ndarray, np.ndarray, np.ndarray], index_type: str
) -> None:
    vectors, ids, queries = corpus
    spec = IndexSpec(dimension=DIM, index_type=index_type)
    index = _filled(spec, vectors, ids)
    before = index.search(queries, 10)

    index.save(tmp_path, generation=42)
    loaded = VectorIndex.load(tmp_path, spec)

    assert loaded is not None
    restored, generation = loaded
    assert generation == 42
    assert restored.size == 2000
    after = restored.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    pointer = json.loads((tmp_path / SNAPSHOT_POINTER).read_text())
    assert pointer == {"file": "index-42.faiss", "generation": 42, "size": 2000, "dimension": DIM,
                       "index_type": index_type}


def test_snapshot_save_keeps_only_latest_file(tmp_path: pathlib.Path,
                                              corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ids, _queries = corpus
    index = _filled(IndexSpec(dimension=DIM), vectors[:10], ids[:10])

    index.save(tmp_path, generation=1)
    index.save(tmp_path, generation=2)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["index-2.faiss", SNAPSHOT_POINTER]


def test_snapshot_missing_loads_none(tmp_path: pathlib.Path) -> None:
    assert VectorIndex.load(tmp_path, IndexSpec(dimension=DIM)) is None


@pytest.mark.parametrize("other", [IndexSpec(dimension=DIM + 1), IndexSpec(dimension=DIM, index_type="hnsw")],
                         ids=["other-dimension", "other-type"])
def test_snapshot_of_other_spec_loads_none(tmp_path: pathlib.Path, other: IndexSpec,
                                           corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ids, _queries = corpus
    _filled(IndexSpec(dimension=DIM), vectors[:10], ids[:10]).save(tmp_path, generation=1)

    assert VectorIndex.load(tmp_path, other) is None


def test_snapshot_ignores_leftover_temp_files(tmp_path: pathlib.Path,
                                              corpus: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    # A crash in the middle of a save leaves *.tmp files, and the previous snapshot must still load.
    vectors, ids, _queries = corpus
    spec = IndexSpec(dimension=DIM)
    _filled(spec, vectors[:10], ids[:10]).save(tmp_path, generation=3)
    (tmp_path / "index-4.faiss.tmp").write_bytes(b"\x00partial")
    (tmp_path / (SNAPSHOT_POINTER + ".tmp")).write_text('{"file": "index-4.fa')

    loaded = VectorIndex.load(tmp_path, spec)

    assert loaded is not None
    assert loaded[1] == 3
    assert loaded[0].size == 10


# --- DocumentIndex: SQLite is the store of record ---

@pytest.fixture(scope="module")
def encoder() -> BiEncoder:
    return BiEncoder(bundled_retriever_path())


def _documents(start: int, count: int) -> list[dict]:
    topics = ["astronomy", "cooking", "football", "painting", "chemistry", "sailing", "poetry", "banking"]
    return [
        {"id": f"doc-{i}", "title": "", "text": f"A short note about {topics[i % len(topics)]}, number {i}.",
         "metadata": {"topic": topics[i % len(topics)]}}
        for i in range(start, start + count)
    ]


def _search_ids(index: DocumentIndex, encoder: BiEncoder, query: str, k: int = 20) -> list[str]:
    return [hit.document.doc_id for hit in index.search(encoder.encode([query])[0], k)]


@pytest.mark.parametrize("index_type", ["flat", "hnsw"], ids=["flat", "hnsw"])
def test_crash_after_commit_before_snapshot_loses_nothing(
    tmp_path: pathlib.Path, encoder: BiEncoder, index_type: str
) -> None:
    spec = IndexSpec(dimension=encoder.dimension, index_type=index_type)
    first = DocumentIndex(tmp_path, encoder, spec)
    first.upsert(_documents(0, 6))
    assert first.snapshot() is True
    saved_generation = json.loads((tmp_path / SNAPSHOT_POINTER).read_text())["generation"]

    # These writes are committed to SQLite but never snapshotted, because the first index is
    # dropped without close(), as in a crash.
    first.upsert(_documents(6, 4))
    first.upsert([{"id": "doc-0", "title": "", "text": "Replaced text about volcanoes.", "metadata": {}}])
    first.delete(["doc-1"])
    reopened = DocumentIndex(tmp_path, encoder, spec)

    assert json.loads((tmp_path / SNAPSHOT_POINTER).read_text())["generation"] > saved_generation
    assert reopened.count() == 9
    assert reopened.vector_count == 9
    found = _search_ids(reopened, encoder, "volcanoes")
    assert found[0] == "doc-0"
    assert sorted(found) == sorted(f"doc-{i}" for i in range(10) if i != 1)
    reopened.close()


def test_missing_snapshot_rebuilt_from_store(tmp_path: pathlib.Path, encoder: BiEncoder) -> None:
    spec = IndexSpec(dimension=encoder.dimension)
    index = DocumentIndex(tmp_path, encoder, spec)
    index.upsert(_documents(0, 8))
    expected = _search_ids(index, encoder, "a recipe for soup")
    index.close()
    for path in tmp_path.glob("index*"):
        path.unlink()

    rebuilt = DocumentIndex(tmp_path, encoder, spec)

    assert rebuilt.vector_count == 8
    assert _search_ids(rebuilt, encoder, "a recipe for soup") == expected
    assert (tmp_path / SNAPSHOT_POINTER).is_file()
    rebuilt.close()


@pytest.mark.parametrize("damage", ["missing-file", "corrupt-file", "corrupt-pointer"])
def test_unreadable_snapshot_rebuilt_from_store(tmp_path: pathlib.Path, encoder: BiEncoder, damage: str) -> None:
    # The snapshot is derived data, so a damaged one must not stop start-up while SQLite has every document.
    spec = IndexSpec(dimension=encoder.dimension)
    index = DocumentIndex(tmp_path, encoder, spec)
    index.upsert(_documents(0, 8))
    expected = _search_ids(index, encoder, "a recipe for soup")
    index.close()
    snapshot = tmp_path / json.loads((tmp_path / SNAPSHOT_POINTER).read_text())["file"]
    if damage == "missing-file":
        snapshot.unlink()
    elif damage == "corrupt-file":
        snapshot.write_bytes(b"not a faiss index")
    else:
        (tmp_path / SNAPSHOT_POINTER).write_text("{")

    rebuilt = DocumentIndex(tmp_path, encoder, spec)

    assert rebuilt.vector_count == 8
    assert _search_ids(rebuilt, encoder, "a recipe for soup") == expected
    assert VectorIndex.load(tmp_path, spec) is not None
    rebuilt.close()


def test_index_type_change_rebuilds_from_store(tmp_path: pathlib.Path, encoder: BiEncoder) -> None:
    flat = DocumentIndex(tmp_path, encoder, IndexSpec(dimension=encoder.dimension))
    flat.upsert(_documents(0, 8))
    expected = _search_ids(flat, encoder, "the night sky", k=3)
    flat.close()

    hnsw = DocumentIndex(tmp_path, encoder, IndexSpec(dimension=encoder.dimension, index_type="hnsw"))

    assert hnsw.vector_count == 8
    assert _search_ids(hnsw, encoder, "the night sky", k=3) == expected
    assert json.loads((tmp_path / SNAPSHOT_POINTER).read_text())["index_type"] == "hnsw"
    hnsw.close()


def test_document_index_search_equals_brute_force_on_stored_vectors(tmp_path: pathlib.Path,
                                                                    encoder: BiEncoder) -> None:
    documents = _documents(0, 16)
    index = DocumentIndex(tmp_path, encoder, IndexSpec(dimension=encoder.dimension))
    index.upsert(documents)
    vectors = encoder.encode([d["text"] for d in documents])
    query = encoder.encode(["ships and the open sea"])[0]

    hits = index.search(query, 5)

    expected = np.argsort(-(vectors @ query), kind="stable")[:5]
    assert [h.document.doc_id for h in hits] == [documents[i]["id"] for i in expected]
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([h.score for h in hits], (vectors @ query)[expected], atol=1e-5)
    assert (tmp_path / STORE_FILE).is_file()
    index.close()


def test_retriever_change_reembeds_documents(tmp_path: pathlib.Path, encoder: BiEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    # A second retriever: the bundled weights with noise added to the word embeddings.
    model = SentenceTransformer(str(bundled_retriever_path()), device="cpu", local_files_only=True)
    embeddings = model[0].auto_model.embeddings.word_embeddings.weight
    with torch.no_grad():
        embeddings.add_(torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    model.save(str(tmp_path / "perturbed"))
    other = BiEncoder(tmp_path / "perturbed")
    assert other.description.version != encoder.description.version
    documents = _documents(0, 8)
    first = DocumentIndex(tmp_path / "data", encoder, IndexSpec(dimension=encoder.dimension))
    first.upsert(documents)
    first.close()

    reopened = DocumentIndex(tmp_path / "data", other, IndexSpec(dimension=other.dimension))

    old = encoder.encode([documents[3]["text"]])[0]
    new = other.encode([documents[3]["text"]])[0]
    assert float(old @ new) < 0.999
    hits = reopened.search(new, 1)
    assert hits[0].document.doc_id == documents[3]["id"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    reopened.close()
