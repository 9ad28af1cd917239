"""The whole offline loop on a small real slice (MQM zh-en), then serving the promoted bundle.

train-reward -> distill -> merge -> fit-fusion -> eval -> promote run through their main()
functions with a recipe file written to a temporary directory; the promoted bundle is served
over gRPC with a Chinese query and explanations, and a worse candidate is rejected.
"""

from __future__ import annotations

import json
import shutil

import grpc
import numpy as np
import pytest
from conftest import require_data

from prefrank.bundles import current_version, read_bundle, write_bundle
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.scoring.fusion import load_fusion
from training import distill, evaluate_bundle, fit_fusion, merge, promote, train_reward

RECIPE = """
name = "tiny-mqm-zhen"
description = "a small slice of MQM zh-en for tests"

[source]
kind = "mqm"
path = "wmt-mqm-ted/zhen/mqm_ted_zhen.tsv"

[prepare]
min_score_gap = 1.0
max_pairs_per_group = 10
max_pairs = 32
max_dev_pairs = 40
max_test_pairs = 48

[train]
output_dir = "{root}/artifacts/reward"
batch_size = 8
max_length = 64
eval_steps = 0
bf16 = "off"
torch_threads = 1

[eval]
batch_size = 32

[fuse]
work_dir = "{root}/fuse"
models_dir = "{root}/models"
reports_dir = "{root}/reports"
distill_max_pairs = 32
distill_batch_size = 8
distill_max_length = 64
alphas = [0.0, 0.5, 1.0]
merge_metric = "ndcg@10"
gain_thresholds = [-5.0, -1.0]
max_queries = 8
safety_pairs = 16
speed_runs = 1
"""


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> dict:
    """Run every step once; the tests below inspect what they left behind."""
    require_data("wmt-mqm-ted")
    require_data("hh-rlhf-harmless")
    root = tmp_path_factory.mktemp("loop")
    recipe_file = root / "tiny-mqm-zhen.toml"
    recipe_file.write_text(RECIPE.format(root=root), encoding="utf-8")
    codes = {}
    for name, module in (("train-reward", train_reward), ("distill", distill), ("merge", merge),
                         ("fit-fusion", fit_fusion), ("eval", evaluate_bundle), ("promote", promote)):
        codes[name] = module.main(["--recipe", str(recipe_file)])
        assert codes[name] == 0, f"{name} exited with {codes[name]}"
    return {"root": root, "recipe_file": recipe_file, "models": root / "models" / "tiny-mqm-zhen",
            "work": root / "fuse" / "tiny-mqm-zhen"}


def _step(loop: dict, name: str) -> dict:
    return json.loads((loop["work"] / f"{name}.json").read_text(encoding="utf-8"))


def test_distill_and_merge_outputs(loop):
    distilled = _step(loop, "distill")
    assert distilled["triplets"] == 32
    assert distilled["teacher_scale"] > 0
    merged = _step(loop, "merge")
    assert [row["alpha"] for row in merged["sweep"]] == [0.0, 0.5, 1.0]
    assert merged["alpha"] in (0.0, 0.5, 1.0)
    assert merged["metric"] == "ndcg@10"
    # The saved model, reloaded from disk, reproduces the sweep's number for its alpha.
    assert merged["recheck_dev"]["ndcg@10"] == pytest.approx(merged["dev"]["ndcg@10"], abs=1e-5)
    assert (loop["work"] / "merged" / "config.json").is_file()


def test_fitted_fusion_is_valid(loop):
    fusion = load_fusion(loop["work"] / "fusion.json")
    fitted = _step(loop, "fit-fusion")
    assert fitted["calibration"] == fusion.calibrator.method
    assert fusion.bias == 0.0
    relevance = fusion.relevance(np.linspace(-100, 100, 401))
    assert np.all(np.diff(relevance) >= 0)
    assert relevance.min() >= 0
    assert relevance.max() <= 1


def test_eval_writes_bundle_and_report(loop):
    version = current_version(loop["models"])
    assert version is not None and version.startswith("tiny-mqm-zhen-")
    bundle = read_bundle(loop["models"] / version)
    test_metrics = bundle.manifest.metrics["test"]
    assert {"accuracy", "ndcg@10", "mrr@10", "ece", "safety_accuracy"} <= set(test_metrics)
    assert "recall@100" not in test_metrics  # each list has 15 candidates, so recall@100 is always 1
    assert bundle.manifest.alpha == _step(loop, "merge")["alpha"]
    assert set(bundle.manifest.data_hashes) >= {"mqm_ted_zhen.tsv", "train_pairs", "dev_pairs", "test_pairs"}
    report_dir = loop["root"] / "reports" / version
    report = (report_dir / "report.md").read_text(encoding="utf-8")
    for row in ("| base retriever |", "| + reward rerank |", "| merged retriever (alpha", "| + fusion |"):
        assert row in report
    assert "## What each step adds" in report
    for plot in ("calibration.png", "alpha.png", "histograms.png"):
        assert (report_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_promote_again_changes_nothing(loop, capsys):
    serving = current_version(loop["models"])
    capsys.readouterr()
    assert promote.main(["--recipe", str(loop["recipe_file"])]) == 0
    assert capsys.readouterr().out.startswith(f"{serving} is already current")
    assert current_version(loop["models"]) == serving


def test_promote_rejects_worse_candidate(loop, capsys):
    serving = current_version(loop["models"])
    bundle = read_bundle(loop["models"] / serving)
    worse = {name: value - 0.2 if not name.startswith("ece") else value + 0.2
             for name, value in bundle.manifest.metrics["test"].items()}
    write_bundle(loop["models"], "tiny-mqm-zhen-99991231T000000Z", retriever_dir=bundle.retriever_dir,
                 reward_dir=bundle.reward_dir, fusion=bundle.fusion, metrics={"test": worse}, recipe="tiny-mqm-zhen")
    capsys.readouterr()
    code = promote.main(["--recipe", str(loop["recipe_file"])])
    message = capsys.readouterr().err
    assert code == promote.EXIT_REJECTED
    assert message.startswith("rejected: bundle tiny-mqm-zhen-99991231T000000Z is worse than current bundle")
    assert f"accuracy: candidate {worse['accuracy']:.4f} vs current" in message
    assert current_version(loop["models"]) == serving
    shutil.rmtree(loop["models"] / "tiny-mqm-zhen-99991231T000000Z")


def test_promote_rejects_different_test_data(loop, capsys):
    serving = current_version(loop["models"])
    bundle = read_bundle(loop["models"] / serving)
    hashes = {**bundle.manifest.data_hashes, "test_pairs": "sha256:" + "0" * 64}
    write_bundle(loop["models"], "tiny-mqm-zhen-99991231T000001Z", retriever_dir=bundle.retriever_dir,
                 reward_dir=bundle.reward_dir, fusion=bundle.fusion, metrics=bundle.manifest.metrics,
                 data_hashes=hashes, recipe="tiny-mqm-zhen")
    capsys.readouterr()
    code = promote.main(["--recipe", str(loop["recipe_file"])])
    message = capsys.readouterr().err
    assert code == promote.EXIT_REJECTED
    assert "cannot be compared with current bundle" in message
    assert "test_pairs hashes differ" in message
    assert current_version(loop["models"]) == serving
    shutil.rmtree(loop["models"] / "tiny-mqm-zhen-99991231T000001Z")


def test_eval_rejects_stale_fusion(loop, capsys):
    path = loop["work"] / "fit-fusion.json"
    original = path.read_text(encoding="utf-8")
    record = json.loads(original)
    path.write_text(json.dumps({**record, "reward": "/elsewhere/old-reward-model"}), encoding="utf-8")
    try:
        capsys.readouterr()
        code = evaluate_bundle.main(["--recipe", str(loop["recipe_file"])])
        message = capsys.readouterr().err
    finally:
        path.write_text(original, encoding="utf-8")
    assert code == 2
    assert "the fit-fusion output is older than its input (reward: /elsewhere/old-reward-model" in message
    assert "run `make fit-fusion RECIPE=tiny-mqm-zhen` again" in message


def test_later_step_rejects_split_change(loop, capsys):
    capsys.readouterr()
    code = merge.main(["--recipe", str(loop["recipe_file"]), "--split-seed", "other"])
    message = capsys.readouterr().err
    assert code == 2
    assert "--split-seed other differs from the reward model's prefrank" in message


def test_service_explains_promoted_bundle(loop, start_server, tmp_path):
    version = current_version(loop["models"])
    running = start_server(models_dir=str(loop["models"]), index_dir=tmp_path / "index")
    texts = ["This is an accurate translation of the talk.", "Banana the of talk accurate is",
             "这是一个翻译。"]
    request = pb.RerankRequest(query="这是关于翻译质量的演讲。",
                               candidates=[pb.Candidate(id=str(i), text=t) for i, t in enumerate(texts)],
                               return_components=True)
    with grpc.insecure_channel(running.server.address) as channel:
        response = pb_grpc.RerankerStub(channel).Rerank(request, timeout=120)
    assert response.bundle_version == version
    assert response.scorer == "fusion"
    fusion = read_bundle(loop["models"] / version).fusion
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    for result in response.results:
        parts = result.components
        assert parts.fused_score == result.score
        assert parts.fused_score == pytest.approx(
            fusion.reward_weight * parts.reward_score + fusion.retriever_weight * parts.retriever_score, abs=1e-6)
        assert parts.relevance == pytest.approx(float(fusion.relevance(np.array([parts.fused_score]))[0]))
        assert 0.0 <= result.relevance_score <= 1.0
    assert running.client.info().bundle_version == version

    # The Python client returns the same explanation.
    answer = running.client.rerank("这是关于翻译质量的演讲。", texts, return_components=True)
    assert answer.bundle_version == version
    by_index = {r.index: r for r in response.results}
    for result in answer.results:
        assert result.components.fused_score == result.score == by_index[result.index].score
        assert result.components.reward_score == by_index[result.index].components.reward_score
        assert result.components.relevance == result.relevance_score
    assert running.client.rerank("查询", texts).results[0].components is None
