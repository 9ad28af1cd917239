"""Score fusion and calibration: fusion.json validation, the formula, and one score for every caller."""

from __future__ import annotations

import json
import math
import pathlib

import grpc
import numpy as np
import pytest
from bundle_helpers import isotonic_fusion, make_bundle, platt_fusion
from conftest import make_config

from prefrank.batch.scoring import score_candidates
from prefrank.bundles import set_current
from prefrank.errors import InvalidArgumentError
from prefrank.proto.prefrank.v1 import prefrank_pb2 as pb
from prefrank.proto.prefrank.v1 import prefrank_pb2_grpc as pb_grpc
from prefrank.ranking import Candidate
from prefrank.runtime import load_ranker
from prefrank.scoring.cosine import CosineScorer
from prefrank.scoring.fusion import (
    Calibrator,
    FusionFormatError,
    FusionModel,
    load_fusion,
    save_fusion,
)

QUERY = "how do vaccines train the immune system"
TEXTS = [
    "Vaccines expose the immune system to a harmless antigen so it makes antibodies.",
    "The stock market fell sharply on Tuesday.",
    "疫苗通过让免疫系统接触无害抗原来产生抗体。",
    "Memory B cells remember an antigen after vaccination.",
]


def _valid_json() -> dict:
    return platt_fusion().to_json()


# --- fusion.json ---

@pytest.mark.parametrize("fusion", [platt_fusion(), isotonic_fusion()], ids=["platt", "isotonic"])
def test_fusion_json_round_trip(tmp_path: pathlib.Path, fusion: FusionModel) -> None:
    save_fusion(fusion, tmp_path / "fusion.json")
    loaded = load_fusion(tmp_path / "fusion.json")

    assert loaded == fusion
    fused = np.linspace(-10, 10, 41)
    np.testing.assert_array_equal(loaded.relevance(fused), fusion.relevance(fused))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("weights"),
         "weights must be an object with 'reward' and 'retriever' (and optional 'first_stage')"),
        (lambda d: d.update(format=2), "format must be 1, got 2"),
        (lambda d: d.update(extra=1), "unknown key(s) extra; expected bias, calibration, format, metadata, weights"),
        (lambda d: d["weights"].update(reward="high"), "weights.reward must be a number, got 'high'"),
        (lambda d: d["weights"].update(retriever=math.inf), "weights.retriever must be finite, got inf"),
        (lambda d: d["weights"].update(click=1.0), "unknown weight(s) click; expected reward, retriever, first_stage"),
        (lambda d: d["calibration"].update(a=-1.0),
         "calibration.a must be > 0 so that relevance rises with the fused score, got -1.0"),
        (lambda d: d.update(calibration={"method": "beta"}),
         "calibration.method must be one of platt, isotonic, got 'beta'"),
        (lambda d: d.update(calibration={"method": "isotonic", "x": [0, 1], "y": [0.5, 0.2]}),
         "calibration.y must be non-decreasing, or relevance would fall as scores rise"),
        (lambda d: d.update(calibration={"method": "isotonic", "x": [1, 0], "y": [0.1, 0.2]}),
         "calibration.x must be strictly increasing"),
        (lambda d: d.update(calibration={"method": "isotonic", "x": [0, 1], "y": [0.1, 1.5]}),
         "calibration.y must lie within [0, 1], got 0.1 .. 1.5"),
        (lambda d: d.update(calibration={"method": "isotonic", "x": [0], "y": [0.1]}),
         "isotonic calibration needs 'x' and 'y' lists of the same length, at least 2; got 1 x and 1 y"),
        (lambda d: d.update(calibration={"method": "platt", "a": 1.0}),
         "platt calibration needs exactly the keys a, c, method, got a, method"),
    ],
    ids=["no-weights", "format", "unknown-key", "weight-type", "weight-inf", "unknown-weight", "negative-slope",
         "unknown-method", "isotonic-decreasing", "isotonic-x-order", "isotonic-range", "isotonic-short",
         "platt-missing-c"],
)
def test_fusion_json_invalid_rejected(tmp_path: pathlib.Path, change, message: str) -> None:
    data = _valid_json()
    change(data)
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(data))

    with pytest.raises(FusionFormatError) as raised:
        load_fusion(path)

    assert raised.value.message == f"{path}: {message}"


def test_fusion_json_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FusionFormatError, match="fusion.json not found; a model bundle needs a fusion.json"):
        load_fusion(tmp_path / "fusion.json")


# --- the formula and the calibration ---

def test_fuse_weighted_sum() -> None:
    fusion = FusionModel(reward_weight=0.5, retriever_weight=2.0, first_stage_weight=0.1, bias=-1.0,
                         calibrator=Calibrator(method="platt", slope=2.0, intercept=0.5))
    reward, retriever, first_stage = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([10.0, 0.0])

    fused = fusion.fuse(reward, retriever, first_stage)

    np.testing.assert_allclose(fused, [0.5 + 1.0 + 1.0 - 1.0, -1.0 + 0.5 + 0.0 - 1.0])
    np.testing.assert_allclose(fusion.relevance(fused), 1 / (1 + np.exp(-(2.0 * fused + 0.5))))
    np.testing.assert_allclose(fusion.fuse(reward, retriever), fused - 0.1 * first_stage)


def test_fuse_missing_component_raises() -> None:
    with pytest.raises(ValueError, match="fusion weight reward=0.7 needs reward scores, but none were given"):
        platt_fusion().fuse(None, np.array([0.5]))


@pytest.mark.parametrize("fusion", [platt_fusion(), isotonic_fusion()], ids=["platt", "isotonic"])
def test_calibrated_relevance_monotone_and_bounded(fusion: FusionModel) -> None:
    fused = np.concatenate([np.linspace(-50, 50, 2001), [-1e300, 1e300, -1e6, 1e6]])
    fused.sort()

    relevance = fusion.relevance(fused)

    assert np.all(np.isfinite(relevance))
    assert relevance.min() >= 0.0
    assert relevance.max() <= 1.0
    assert np.all(np.diff(relevance) >= 0.0)


def test_isotonic_interpolates_between_thresholds() -> None:
    relevance = isotonic_fusion().relevance(np.array([-5.0, -2.0, 0.5, 3.0, 9.0]))

    np.testing.assert_allclose(relevance, [0.02, 0.02, 0.35, 0.97, 0.97])


# --- Ranker and gRPC apply the bundle identically ---

@pytest.fixture(scope="module")
def fused_bundle(tmp_path_factory: pytest.TempPathFactory, reward_model_dir: pathlib.Path) -> pathlib.Path:
    models_dir = tmp_path_factory.mktemp("fusion-models")
    make_bundle(models_dir, "fused-1", reward_model_dir, fusion=platt_fusion())
    set_current(models_dir, "fused-1")
    return models_dir


def test_ranker_applies_bundle_fusion(tmp_path: pathlib.Path, fused_bundle: pathlib.Path) -> None:
    fusion = platt_fusion()
    ranker = load_ranker(make_config(tmp_path / "data", models_dir=str(fused_bundle), backend="fp32"))
    candidates = [Candidate(id=str(i), text=t) for i, t in enumerate(TEXTS)]

    outcome = ranker.rerank(QUERY, candidates, return_components=True)

    reward = ranker.scorer.score(QUERY, TEXTS).scores
    cosine = CosineScorer(ranker.encoder).score(QUERY, TEXTS).scores
    expected = fusion.reward_weight * reward + fusion.retriever_weight * cosine + fusion.bias
    by_index = {r.index: r for r in outcome.results}
    np.testing.assert_allclose([by_index[i].score for i in range(4)], expected, rtol=1e-6)
    np.testing.assert_allclose([by_index[i].relevance_score for i in range(4)],
                               1 / (1 + np.exp(-(fusion.calibrator.slope * expected
                                                 + fusion.calibrator.intercept))), rtol=1e-6)
    assert [r.score for r in outcome.results] == sorted((r.score for r in outcome.results), reverse=True)
    assert outcome.scorer == "fusion"
    assert outcome.bundle_version == "fused-1"
    first = outcome.results[0]
    assert first.components.fused_score == first.score
    assert first.components.relevance == first.relevance_score
    assert first.components.reward_score == pytest.approx(reward[first.index], rel=1e-6)
    assert first.components.retriever_score == pytest.approx(cosine[first.index], rel=1e-6)


def test_ranker_partial_first_stage_rejected(tmp_path: pathlib.Path, reward_model_dir: pathlib.Path) -> None:
    models_dir = tmp_path / "models"
    fusion = FusionModel(reward_weight=1.0, retriever_weight=1.0, first_stage_weight=0.5,
                         calibrator=Calibrator(method="platt", slope=1.0, intercept=0.0))
    make_bundle(models_dir, "with-first-stage", reward_model_dir, fusion=fusion)
    set_current(models_dir, "with-first-stage")
    ranker = load_ranker(make_config(tmp_path / "data", models_dir=str(models_dir), backend="fp32"))
    candidates = [Candidate(id="a", text=TEXTS[0], first_stage_score=3.0), Candidate(id="b", text=TEXTS[1])]

    with pytest.raises(InvalidArgumentError) as raised:
        ranker.rerank(QUERY, candidates)

    assert raised.value.message == (
        "candidates[1].first_stage_score is missing, but 1 other candidates have one; the loaded score "
        "fusion weights first-stage scores, so send them for every candidate or for none"
    )
    both = [Candidate(id="a", text=TEXTS[0], first_stage_score=3.0),
            Candidate(id="b", text=TEXTS[1], first_stage_score=1.0)]
    fused = {r.candidate.id: r.score for r in ranker.rerank(QUERY, both).results}
    without_first_stage = [Candidate(id=c.id, text=c.text) for c in both]
    plain = {r.candidate.id: r.score for r in ranker.rerank(QUERY, without_first_stage).results}
    assert fused["a"] - plain["a"] == pytest.approx(1.5)
    assert fused["b"] - plain["b"] == pytest.approx(0.5)


def test_grpc_matches_ranker_and_batch_scorer(start_server, tmp_path: pathlib.Path, fused_bundle: pathlib.Path) -> None:
    running = start_server(models_dir=str(fused_bundle), backend="fp32")
    ranker = load_ranker(make_config(tmp_path / "batch-data", models_dir=str(fused_bundle), backend="fp32"))
    request = pb.RerankRequest(
        query=QUERY, candidates=[pb.Candidate(id=str(i), text=t) for i, t in enumerate(TEXTS)],
        return_components=True,
    )

    with grpc.insecure_channel(running.server.address) as channel:
        response = pb_grpc.RerankerStub(channel).Rerank(request, timeout=60)
    in_process = ranker.rerank(QUERY, [Candidate(id=str(i), text=t) for i, t in enumerate(TEXTS)])
    batch = score_candidates(ranker, QUERY, [str(i) for i in range(4)], TEXTS, max_candidates=1000)

    served = {r.index: r for r in response.results}
    local = {r.index: r for r in in_process.results}
    for i in range(len(TEXTS)):
        assert served[i].score == pytest.approx(local[i].score, rel=1e-9, abs=1e-9)
        assert served[i].relevance_score == pytest.approx(local[i].relevance_score, rel=1e-9, abs=1e-9)
        assert batch.scores[i] == pytest.approx(local[i].score, rel=1e-9, abs=1e-9)
        assert batch.relevance[i] == pytest.approx(local[i].relevance_score, rel=1e-9, abs=1e-9)
        assert served[i].components.fused_score == served[i].score
        assert served[i].components.relevance == served[i].relevance_score
        assert served[i].components.HasField("reward_score")
    assert response.bundle_version == "fused-1"
    assert response.scorer == "fusion"

    # Search: the retriever component is the retrieval cosine, fused with the reward logit.
    running.client.upsert([{"id": str(i), "text": t} for i, t in enumerate(TEXTS)])
    search = pb.SearchRequest(query=QUERY, top_k=4, top_n=4, return_components=True)
    with grpc.insecure_channel(running.server.address) as channel:
        found = pb_grpc.RerankerStub(channel).Search(search, timeout=60)
    assert found.bundle_version == "fused-1"
    assert len(found.results) == 4
    for result in found.results:
        parts = result.components
        assert parts.retriever_score == pytest.approx(result.retrieval_score)
        assert parts.fused_score == pytest.approx(0.7 * parts.reward_score + 2.5 * parts.retriever_score - 0.4)
        assert parts.relevance == pytest.approx(1 / (1 + math.exp(-(1.3 * parts.fused_score + 0.2))))
        assert result.score == parts.fused_score
    info = running.client.info()
    assert info.bundle_version == "fused-1"
    assert info.scorer == "fusion"
    assert dict(info.bundle_metrics["test"]) == {"ndcg@10": 0.5, "ece": 0.05}


def test_rerank_without_bundle_keeps_fixed_map(shared_server) -> None:
    request = pb.RerankRequest(
        query=QUERY, candidates=[pb.Candidate(id=str(i), text=t) for i, t in enumerate(TEXTS)],
        return_components=True,
    )
    with grpc.insecure_channel(shared_server.server.address) as channel:
        response = pb_grpc.RerankerStub(channel).Rerank(request, timeout=60)

    assert response.bundle_version == ""
    assert response.scorer == "retriever-cosine"
    for result in response.results:
        assert result.relevance_score == pytest.approx((result.score + 1) / 2)
        assert result.components.retriever_score == result.score
        assert result.components.fused_score == result.score
        assert not result.components.HasField("reward_score")
    without = pb.RerankRequest(query=QUERY, candidates=[pb.Candidate(id="0", text=TEXTS[0])])
    with grpc.insecure_channel(shared_server.server.address) as channel:
        plain = pb_grpc.RerankerStub(channel).Rerank(without, timeout=60)
    assert not plain.results[0].HasField("components")
