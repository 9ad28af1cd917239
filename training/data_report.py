"""The data report: [UNK] rates of the base tokenizer on the prepared text, written as JSON and Markdown."""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from training.prepare import PreparedData

logger = logging.getLogger(__name__)

UNK_SAMPLE = 2000


def unk_rate(tokenizer: Any, texts: Sequence[str]) -> float:
    """Return the share of (non-special) tokens the tokenizer maps to its unknown token."""
    if tokenizer.unk_token_id is None or not texts:
        return 0.0
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
    total = sum(len(ids) for ids in encoded)
    unknown = sum(ids.count(tokenizer.unk_token_id) for ids in encoded)
    return unknown / total if total else 0.0


def add_unk_rates(prepared: PreparedData, tokenizer: Any, model_dir: str, warn_rate: float) -> None:
    """Measure [UNK] rates on queries and candidates of every split (a seeded sample) into the report.

    Logs a WARNING, and flags the report, when a rate is above ``warn_rate``: the model then gets
    [UNK] in place of most of that text and cannot learn from it.
    """
    frames = list(prepared.pairs.values())
    queries = np.concatenate([frame["query"].unique() for frame in frames]) if frames else np.array([])
    candidates = np.concatenate([_candidate_texts(frame) for frame in frames]) if frames else np.array([])
    rng = np.random.default_rng(0)
    rates = {}
    for name, texts in (("query", queries), ("candidate", candidates)):
        sample = rng.choice(texts, size=min(len(texts), UNK_SAMPLE), replace=False) if len(texts) else texts
        rates[name] = round(unk_rate(tokenizer, [str(text) for text in sample]), 4)
    high = {name: rate for name, rate in rates.items() if rate > warn_rate}
    prepared.report["unk_rate"] = rates
    prepared.report["unk_warning"] = bool(high)
    prepared.report["tokenizer"] = model_dir
    if high:
        message = (
            f"tokenizer of {model_dir} maps {', '.join(f'{v:.1%} of {k} tokens' for k, v in high.items())} to "
            f"[UNK] (threshold {warn_rate:.1%}): the model cannot read that text, so its scores on it mean "
            "little. Point the recipe's [train] base_model at a local model directory whose vocabulary "
            "covers the language (e.g. a multilingual MiniLM or a Chinese BERT saved with save_pretrained)"
        )
        prepared.report["unk_message"] = message
        logger.warning("!!! [UNK] WARNING: %s", message)


def _candidate_texts(frame: Any) -> np.ndarray:
    return np.unique(np.concatenate([frame["chosen"].to_numpy(dtype=str), frame["rejected"].to_numpy(dtype=str)]))


def write_data_report(report: dict[str, Any], directory: pathlib.Path) -> None:
    """Write ``data_report.json`` and ``data_report.md`` into the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
    (directory / "data_report.md").write_text(format_data_report(report), encoding="utf-8")


def format_data_report(report: dict[str, Any]) -> str:
    """Render the report as Markdown."""
    lines = [f"# Data report: {report.get('recipe', '')}", ""]
    if report.get("unk_warning"):
        lines += [f"> **WARNING: high [UNK] rate.** {report['unk_message']}", ""]
    lines += [f"Source kind: {report['source_kind']}. Rows in: {report['rows_in']}.", ""]
    lines += ["| files | sha256 |", "| --- | --- |"]
    lines += [f"| {path} | {digest[:16]}… |" for path, digest in report.get("files", {}).items()]
    lines += ["", "| dropped or not used | rows |", "| --- | --- |"]
    for section in ("loader_notes", "dropped", "ties_not_used"):
        lines += [f"| {reason} | {count} |" for reason, count in report.get(section, {}).items()]
    lines += ["", "| split | pairs | query groups |", "| --- | --- | --- |"]
    lines += [f"| {name} | {count} | {report['groups_out'][name]} |" for name, count in report["pairs_out"].items()]
    if "unk_rate" in report:
        lines += ["", f"[UNK] rate ({report['tokenizer']}): "
                  + ", ".join(f"{name} {rate:.2%}" for name, rate in report["unk_rate"].items())]
    return "\n".join(lines) + "\n"
