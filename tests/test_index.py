"""Index.Upsert, Index.Delete and Index.Stats over gRPC, persistence across restarts, metadata filters."""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
from collections.abc import Callable, Iterator

import pytest
from conftest import RunningServer, make_config

from prefrank import errors
from prefrank.retrieval.vector_index import SNAPSHOT_POINTER

DOCUMENTS = [
    {"id": "astro", "title": "Astronomy", "text": "Telescopes observe distant galaxies and nebulae at night.",
     "metadata": {"lang": "en", "year": 2020, "published": True}},
    {"id": "cook", "title": "Cooking", "text": "Simmer the tomato soup slowly with garlic and basil.",
     "metadata": {"lang": "en", "year": 2021, "published": False}},
    {"id": "sail", "title": "", "text": "The sailing boat crossed the stormy sea before dawn.",
     "metadata": {"lang": "en", "year": 2020, "published": False, "tags": ["sea", "boats"]}},
    {"id": "zh-capital", "title": "首都", "text": "北京是中华人民共和国的首都。",
     "metadata": {"lang": "中文", "来源": "新闻", "year": 2020, "published": True}},
    {"id": "zh-fruit", "title": "", "text": "香蕉是一种热带水果。",
     "metadata": {"lang": "中文", "来源": "百科", "year": 2019, "published": True}},
]
StartServer = Callable[..., RunningServer]


def _ids(hits: list) -> list[str]:
    return [hit.id for hit in hits]


def test_upsert_inserts_and_stats_counts(start_server: StartServer, tmp_path: pathlib.Path) -> None:
    running = start_server()

    result = running.client.upsert(DOCUMENTS)
    stats = running.client.stats()

    assert (result.inserted, result.replaced, result.truncated) == (5, 0, 0)
    assert stats.documents == 5
    assert stats.dimension == 384
    assert stats.index_type == "flat"
    assert stats.data_dir == str((tmp_path / "data").resolve())


def test_upsert_existing_id_replaces(start_server: StartServer) -> None:
    running = start_server()
    running.client.upsert(DOCUMENTS)

    result = running.client.upsert([{"id": "cook", "text": "Volcanoes erupt molten lava and ash.",
                                     "metadata": {"lang": "fr"}}])

    assert (result.inserted, result.replaced) == (0, 1)
    assert running.client.stats().documents == 5
    hits = running.client.search("Volcanoes erupt molten lava and ash.", top_n=1, return_documents=True)
    assert hits[0].id == "cook"
    assert hits[0].text == "Volcanoes erupt molten lava and ash."
    assert hits[0].title == ""
    assert hits[0].metadata == {"lang": "fr"}
    assert hits[0].retrieval_score == pytest.approx(1.0, abs=1e-5)
    soup = running.client.search("tomato soup with garlic and basil", top_n=5, return_documents=True)
    assert all("tomato" not in hit.text for hit in soup)
    assert running.client.search("a", top_n=5, filter={"year": 2021}) == []

    mixed = running.client.upsert([DOCUMENTS[1], {"id": "new", "text": "A new document."}])

    assert (mixed.inserted, mixed.replaced) == (1, 1)
    assert running.client.stats().documents == 6


def test_upsert_long_document_counted_truncated(start_server: StartServer) -> None:
    running = start_server()
    long_text = " ".join(["the sailing boat crossed the stormy sea"] * 60)

    result = running.client.upsert([{"id": "long", "text": long_text}, {"id": "short", "text": "A short text."}])
    hits = running.client.search("sailing boat", top_n=2)

    assert result.truncated == 1
    assert {hit.id: hit.truncated for hit in hits} == {"long": True, "short": False}


def test_delete_removes_documents(start_server: StartServer) -> None:
    running = start_server()
    running.client.upsert(DOCUMENTS)

    deleted = running.client.delete(["astro", "zh-fruit"])

    assert deleted == 2
    assert running.client.stats().documents == 3
    hits = running.client.search("telescopes and galaxies", top_n=10)
    assert sorted(_ids(hits)) == ["cook", "sail", "zh-capital"]

    again = running.client.upsert([DOCUMENTS[0]])

    assert (again.inserted, again.replaced) == (1, 0)
    assert _ids(running.client.search("telescopes and galaxies", top_n=1)) == ["astro"]


def test_delete_unknown_id_deletes_nothing(start_server: StartServer) -> None:
    running = start_server()
    running.client.upsert(DOCUMENTS)

    with pytest.raises(errors.NotFoundError) as raised:
        running.client.delete(["astro", "missing", "cook"])

    assert raised.value.message == "NOT_FOUND: ids: 1 unknown document id(s): 'missing'; nothing was deleted"
    assert running.client.stats().documents == 5
    assert _ids(running.client.search("telescopes and galaxies", top_n=1)) == ["astro"]
    assert _ids(running.client.search("tomato soup", top_n=1)) == ["cook"]


def test_index_persists_across_restart(start_server: StartServer, tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "persistent"
    first = start_server(index_dir=data_dir)
    first.client.upsert(DOCUMENTS)
    first.client.upsert([{"id": "cook", "text": "Volcanoes erupt molten lava and ash."}])
    first.client.delete(["sail"])
    before = first.client.search("lava from a volcano", top_k=10, top_n=10, return_documents=True)
    first.stop()

    second = start_server(index_dir=data_dir)
    after = second.client.search("lava from a volcano", top_k=10, top_n=10, return_documents=True)

    assert second.client.stats().documents == 4
    assert _ids(after) == _ids(before)
    assert after[0].id == "cook"
    assert [hit.score for hit in after] == pytest.approx([hit.score for hit in before], abs=1e-6)
    assert {hit.id: hit.metadata for hit in after} == {hit.id: hit.metadata for hit in before}
    assert {hit.id: hit.text for hit in after}["zh-capital"] == "北京是中华人民共和国的首都。"


def test_stop_saves_snapshot_of_latest_writes(start_server: StartServer, tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "snapshot"
    running = start_server(index_dir=data_dir, snapshot_seconds=3600.0)
    running.client.upsert(DOCUMENTS)

    running.stop()

    pointer = json.loads((data_dir / SNAPSHOT_POINTER).read_text())
    assert pointer["size"] == 5
    assert (data_dir / pointer["file"]).is_file()


def test_hnsw_index_upsert_replace_delete(start_server: StartServer) -> None:
    running = start_server(index_type="hnsw")

    inserted = running.client.upsert(DOCUMENTS)
    replaced = running.client.upsert([{"id": "astro", "text": "Volcanoes erupt molten lava and ash."}])
    deleted = running.client.delete(["cook"])

    assert (inserted.inserted, replaced.replaced, deleted) == (5, 1, 1)
    stats = running.client.stats()
    assert (stats.index_type, stats.documents) == ("hnsw", 4)
    assert _ids(running.client.search("lava from a volcano", top_n=1)) == ["astro"]
    assert "cook" not in _ids(running.client.search("tomato soup", top_n=10))


# --- metadata filters ---

@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that contains DOCUMENTS. Tests that use it must not write."""
    running = RunningServer(make_config(tmp_path_factory.mktemp("filter-data")))
    running.client.upsert(DOCUMENTS)
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"lang": "en"}, ["astro", "cook", "sail"]),
        ({"year": 2020}, ["astro", "sail", "zh-capital"]),
        ({"year": 2020.0}, ["astro", "sail", "zh-capital"]),
        ({"published": True}, ["astro", "zh-capital", "zh-fruit"]),
        ({"published": False}, ["cook", "sail"]),
        ({"lang": "en", "year": 2020}, ["astro", "sail"]),
        ({"lang": "中文"}, ["zh-capital", "zh-fruit"]),
        ({"来源": "新闻"}, ["zh-capital"]),
        ({"year": "2020"}, []),
        ({"published": 1}, []),
        ({"lang": "de"}, []),
        ({"no-such-key": "x"}, []),
    ],
    ids=["string", "number", "number-float", "bool-true", "bool-false", "and", "chinese-value", "chinese-key",
         "string-is-not-number", "number-is-not-bool", "no-match", "unknown-key"],
)
def test_search_filter_matches_metadata(filled: RunningServer, filters: dict, expected: list[str]) -> None:
    hits = filled.client.search("a document", top_k=100, top_n=100, filter=filters)

    assert sorted(_ids(hits)) == expected


def test_search_filter_list_metadata_stored_not_filterable(filled: RunningServer) -> None:
    hits = filled.client.search("sailing boat at sea", top_n=1, return_documents=True)

    assert hits[0].metadata["tags"] == ["sea", "boats"]
    with pytest.raises(errors.InvalidArgumentError):
        filled.client.search("sailing boat at sea", filter={"tags": ["sea", "boats"]})


def test_search_chinese_query_with_filter(filled: RunningServer) -> None:
    hits = filled.client.search("中国的首都是北京", top_n=2, filter={"lang": "中文"}, return_documents=True)

    assert _ids(hits) == ["zh-capital", "zh-fruit"]
    assert hits[0].title == "首都"
    assert hits[0].text == "北京是中华人民共和国的首都。"
    assert hits[0].metadata == {"lang": "中文", "来源": "新闻", "year": 2020, "published": True}


def test_search_filter_replaced_metadata_updates(start_server: StartServer) -> None:
    filled = start_server()
    filled.client.upsert(DOCUMENTS)
    filled.client.upsert([{"id": "astro", "text": DOCUMENTS[0]["text"], "metadata": {"lang": "la"}}])

    assert _ids(filled.client.search("galaxies", filter={"lang": "la"})) == ["astro"]
    assert "astro" not in _ids(filled.client.search("galaxies", filter={"lang": "en"}))
    assert "astro" not in _ids(filled.client.search("galaxies", filter={"year": 2020}))


def test_concurrent_upserts_and_searches(start_server: StartServer) -> None:
    running = start_server()
    topics = ["astronomy", "cooking", "football", "sailing"]

    def write_and_read(topic: str) -> list[str]:
        documents = [{"id": f"{topic}-{i}", "text": f"Note {i} about {topic}.", "metadata": {"topic": topic}}
                     for i in range(10)]
        for start in range(0, 10, 2):
            running.client.upsert(documents[start:start + 2])
            running.client.search(f"about {topic}", top_n=3)
        return _ids(running.client.search(topic, top_k=100, top_n=100, filter={"topic": topic}))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        found = dict(zip(topics, pool.map(write_and_read, topics), strict=True))

    assert running.client.stats().documents == 40
    for topic in topics:
        assert sorted(found[topic]) == sorted(f"{topic}-{i}" for i in range(10)), topic
