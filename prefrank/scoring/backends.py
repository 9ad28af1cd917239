"""Inference backends for the cross-encoder (fp32, bf16, int8) and the parity check they must pass."""

from __future__ import annotations

import copy
import functools
import logging
import pathlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "fp32", "bf16", "int8")
# A backend serves only if its scores on the parity sample agree this closely with fp32.
MIN_SPEARMAN = 0.995
MIN_TOP10_OVERLAP = 0.95


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Return the CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@dataclass(frozen=True)
class ParityReport:
    """Agreement of a backend's scores with fp32 scores on the same pairs.

    Attributes:
        spearman: Mean Spearman rank correlation per query group.
        top10_overlap: Mean fraction of each group's fp32 top 10 that the backend also ranks top 10.
        max_abs_diff: Largest absolute score difference over all pairs.
    """

    spearman: float
    top10_overlap: float
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return self.spearman >= MIN_SPEARMAN and self.top10_overlap >= MIN_TOP10_OVERLAP

    def __str__(self) -> str:
        return (f"Spearman {self.spearman:.4f} (min {MIN_SPEARMAN}), top-10 overlap {self.top10_overlap:.3f} "
                f"(min {MIN_TOP10_OVERLAP}), max abs diff {self.max_abs_diff:.4g}")


def compare_scores(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> ParityReport:
    """Compare per-query score arrays of a backend with the fp32 reference."""
    from scipy.stats import spearmanr

    correlations, overlaps, diffs = [], [], []
    for ref, got in zip(reference, candidate, strict=True):
        correlations.append(float(spearmanr(ref, got).statistic) if len(ref) > 1 else 1.0)
        k = min(10, len(ref))
        top_ref = set(np.argsort(-ref, kind="stable")[:k])
        top_got = set(np.argsort(-got, kind="stable")[:k])
        overlaps.append(len(top_ref & top_got) / k)
        diffs.append(float(np.max(np.abs(ref - got))))
    return ParityReport(float(np.mean(correlations)), float(np.mean(overlaps)), float(max(diffs)))


def build_backend(model: object, backend: str) -> tuple[object, Callable]:
    """Return (model to run, context factory) for a backend; the model is copied unless fp32.

    bf16 casts the weights to bfloat16, so no per-operation casts are needed as under autocast.
    int8 applies PyTorch dynamic quantisation to every Linear layer.
    """
    import contextlib

    import torch

    if backend == "fp32":
        return model, contextlib.nullcontext
    if backend == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16), contextlib.nullcontext
    if backend == "int8":
        with warnings.catch_warnings():
            # torch 2.13 marks torch.ao.quantization deprecated in favour of torchao, which is not a dependency.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
            )
        return quantized, contextlib.nullcontext
    raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


# Fixed parity sample: three queries (English, Chinese, German) with candidates of mixed relevance
# and length, written for this check. Scores on it are compared between fp32 and a faster backend.
PARITY_SAMPLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("how do vaccines train the immune system", (
        "Vaccines expose the immune system to a harmless part of a pathogen so that it can make antibodies.",
        "Memory B cells and T cells remain after vaccination and respond quickly to a later infection.",
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "Some vaccines use weakened viruses; others use only a protein or messenger RNA.",
        "Booster doses raise antibody levels that have declined over time.",
        "Photosynthesis converts light energy into chemical energy in plants.",
        "Herd immunity protects people who cannot be vaccinated because few hosts remain for the pathogen.",
        "The stock market fell sharply after the announcement of higher interest rates.",
        "Adjuvants are added to some vaccines to strengthen the immune response.",
        "A balanced diet includes vegetables, whole grains and protein.",
        "Antibodies bind to antigens on the surface of viruses and mark them for destruction.",
        "The immune system distinguishes the body's own cells from foreign invaders.",
    )),
    ("如何提高睡眠质量", (
        "保持规律的作息时间，每天在同一时间上床和起床。",
        "睡前一小时避免使用手机和电脑，蓝光会抑制褪黑素分泌。",
        "北京是中华人民共和国的首都。",
        "卧室应保持安静、黑暗和凉爽。",
        "下午以后少喝咖啡和浓茶。",
        "这家餐厅的烤鸭非常有名。",
        "适量运动有助于入睡，但不要在临睡前剧烈运动。",
        "长江是亚洲最长的河流。",
        "睡前可以读书或听轻音乐来放松。",
        "Regular exercise and a dark, quiet bedroom improve sleep quality.",
        "股票价格受多种因素影响。",
        "如果长期失眠，应咨询医生。",
    )),
    ("Wie funktioniert eine Wärmepumpe?", (
        "Eine Wärmepumpe entzieht der Umgebung Wärme und hebt sie mit einem Verdichter "
        "auf ein höheres Temperaturniveau.",
        "Das Kältemittel verdampft bei niedriger Temperatur und nimmt dabei Wärme aus Luft, Wasser oder Erdreich auf.",
        "Berlin ist die Hauptstadt von Deutschland.",
        "Die Jahresarbeitszahl beschreibt das Verhältnis von abgegebener Wärme zu eingesetztem Strom.",
        "Fußball ist die beliebteste Sportart in Deutschland.",
        "A heat pump moves heat from outside air or ground into a building using a refrigerant cycle.",
        "Im Sommer kann eine Wärmepumpe auch zum Kühlen verwendet werden.",
        "Der Rhein fließt durch mehrere europäische Länder.",
        "Erdwärmepumpen nutzen die konstante Temperatur des Bodens in einigen Metern Tiefe.",
        "Brot wird aus Mehl, Wasser, Salz und Hefe gebacken.",
        "Eine gute Dämmung des Hauses senkt die nötige Vorlauftemperatur der Heizung.",
        "Der Verdichter wird elektrisch angetrieben.",
    )),
)
