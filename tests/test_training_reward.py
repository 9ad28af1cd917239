"""Reward-model training: the Bradley-Terry loss, a short real training run, the saved artifact and serving it."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, require_data

from training.bradley_terry import BradleyTerryLoss
from training.evaluate_reward import pairwise_accuracy, reward_scorer, score_pairs
from training.pipeline import evaluate_artifact, save_artifact
from training.prepare import PreparedData, prepare
from training.recipe import EvalConfig, PrepareConfig, Recipe, SourceConfig, TrainConfig
from training.sources import load_source
from training.train_reward import load_base_model, train

# A small slice of SciFact: claim vs (evidence abstract, random abstract), 40-token inputs, 12 steps
# of 8 pairs. One torch thread: on a CPU shared with other processes, two spinning threads were
# about twice as slow (measured on the 2-core development machine).
TINY_TRAIN = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-4, warmup_ratio=0.1, max_length=40,
                         eval_steps=0, seed=13, bf16="off", torch_threads=1)
TINY_PREPARE = PrepareConfig(dev_fraction=0.1, test_fraction=0.3, max_pairs=96, max_dev_pairs=60,
                             max_test_pairs=120)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Train once on a real SciFact slice, save the artifact; shared by the tests below."""
    require_data("scifact")
    loaded = load_source("scifact", DATA_DIR, {"random_negatives": 1, "use_cited": False})
    prepared = prepare(loaded, TINY_PREPARE)
    prepared.report["files"] = {}
    model = load_base_model("", TINY_TRAIN.max_length, TINY_TRAIN.seed)
    untrained = pairwise_accuracy(*score_pairs(prepared.pairs["test"], reward_scorer(model)))
    result = train(model, prepared.pairs["train"], prepared.pairs["dev"], TINY_TRAIN)
    recipe = Recipe(name="tiny-scifact", description="test", source=SourceConfig(kind="scifact"),
                    prepare=TINY_PREPARE,
                    train=TrainConfig(**{**TINY_TRAIN.__dict__, "output_dir": str(tmp_path_factory.mktemp("art"))}),
                    eval=EvalConfig())
    directory = save_artifact(model, recipe, prepared, result)
    return {"model": model, "prepared": prepared, "result": result, "directory": directory, "recipe": recipe,
            "untrained": untrained}


def test_bradley_terry_loss_matches_formula(reward_model_dir):
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(reward_model_dir), device="cpu")
    loss_fn = BradleyTerryLoss(model, margin_scale=0.5)
    queries, chosen, rejected = ["q one", "q two"], ["good one", "good two"], ["bad one", "bad two"]
    margins, weights = torch.tensor([2.0, float("nan")]), torch.tensor([1.0, 3.0])
    with torch.no_grad():
        value = float(loss_fn([queries, chosen, rejected], (margins, weights)))
        good = model.predict(list(zip(queries, chosen, strict=True)), activation_fn=torch.nn.Identity())
        bad = model.predict(list(zip(queries, rejected, strict=True)), activation_fn=torch.nn.Identity())
    terms = [-math.log(1 / (1 + math.exp(-(good[0] - bad[0] - 1.0)))),
             -math.log(1 / (1 + math.exp(-(good[1] - bad[1]))))]
    assert value == pytest.approx((terms[0] + 3 * terms[1]) / 4, rel=1e-4)


def test_bradley_terry_loss_rejects_two_labels():
    from sentence_transformers import CrossEncoder

    from prefrank.artifacts import bundled_retriever_path

    model = CrossEncoder(str(bundled_retriever_path()), num_labels=2, device="cpu")
    with pytest.raises(ValueError, match="^BradleyTerryLoss expects a model with 1 output label, got 2$"):
        BradleyTerryLoss(model)


def test_train_beats_chance_on_held_out_pairs(tiny_run):
    test_pairs = tiny_run["prepared"].pairs["test"]
    accuracy = pairwise_accuracy(*score_pairs(test_pairs, reward_scorer(tiny_run["model"])))
    assert len(test_pairs) == 120
    # 120 pairs: accuracy >= 0.65 is more than three standard deviations above chance (0.5).
    assert accuracy >= 0.65, f"held-out accuracy {accuracy:.3f} (untrained {tiny_run['untrained']:.3f})"
    assert accuracy > tiny_run["untrained"]
    assert tiny_run["result"].pairs_per_second > 0
    assert tiny_run["result"].history[-1]["step"] == tiny_run["result"].steps


def test_artifact_reloads_with_equal_scores(tiny_run):
    from sentence_transformers import CrossEncoder

    pairs = tiny_run["prepared"].pairs["test"].head(20)
    inputs = list(zip(pairs["query"], pairs["chosen"], strict=True))
    reloaded = CrossEncoder(str(tiny_run["directory"]), device="cpu", local_files_only=True)
    identity = torch.nn.Identity()
    expected = tiny_run["model"].predict(inputs, activation_fn=identity)
    assert reloaded.num_labels == 1
    np.testing.assert_allclose(reloaded.predict(inputs, activation_fn=identity), expected, rtol=0, atol=1e-5)


def test_artifact_manifest_fields(tiny_run):
    directory = tiny_run["directory"]
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "reward-model"
    assert manifest["recipe"]["name"] == "tiny-scifact"
    assert manifest["base_model"]["path"].endswith("model")
    assert set(manifest["libraries"]) >= {"torch", "transformers", "sentence-transformers"}
    assert manifest["data_report"]["pairs_out"]["test"] == 120
    assert manifest["metrics"]["dev"]["accuracy"] == tiny_run["result"].best_dev_accuracy
    assert manifest["metrics"]["dev"]["pairs"] == len(tiny_run["prepared"].pairs["dev"])
    assert (directory / "data_report.md").is_file()
    assert (directory.parent / "latest").resolve() == directory.resolve()


def test_evaluate_artifact_writes_baselines(tiny_run):
    # 24 test pairs keep the bi-encoder baseline (256-token abstracts) short.
    prepared = tiny_run["prepared"]
    subset = PreparedData({**prepared.pairs, "test": prepared.pairs["test"].head(24)}, None, prepared.report)
    results = evaluate_artifact(tiny_run["directory"], tiny_run["recipe"], subset)
    assert set(results) == {"reward model (this artifact)", "base bi-encoder cosine", "length (longer wins)",
                            "random"}
    manifest = json.loads((tiny_run["directory"] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["metrics"]["test"]["accuracy"] == results["reward model (this artifact)"]["accuracy"]
    assert manifest["baselines"]["random"]["pairs"] == 24
    assert "| reward model (this artifact) |" in manifest["evaluation_table"]


def test_service_ranks_with_trained_artifact(tiny_run, start_server):
    server = start_server(reward_model=str(tiny_run["directory"]), backend="fp32")
    pairs = tiny_run["prepared"].pairs["test"].head(1)
    query, chosen, rejected = pairs.iloc[0][["query", "chosen", "rejected"]]
    response = server.client.rerank(query, [rejected, chosen])
    expected = tiny_run["model"].predict([(query, rejected), (query, chosen)], activation_fn=torch.nn.Identity())
    manifest = json.loads((tiny_run["directory"] / "manifest.json").read_text(encoding="utf-8"))
    assert response.model_version == manifest["model_version"]
    scores = {result.index: result.score for result in response.results}
    assert scores[0] == pytest.approx(float(expected[0]), abs=1e-4)
    assert scores[1] == pytest.approx(float(expected[1]), abs=1e-4)
    assert [result.index for result in response.results] == list(np.argsort(-expected))


def test_train_bf16_setting_resolves():
    from training.train_reward import cpu_supports_bf16, use_bf16

    assert use_bf16("off") is False
    assert use_bf16("on") is True
    assert use_bf16("auto") is cpu_supports_bf16()


def test_artifact_path_is_gitignored():
    gitignore = (pathlib.Path(__file__).resolve().parent.parent / ".gitignore").read_text(encoding="utf-8")
    assert "artifacts/" in gitignore.splitlines()
