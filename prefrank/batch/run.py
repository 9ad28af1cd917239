"""One batch-scoring run: paths, the checkpointed parts, resume and the summary, shared by both engines."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prefrank.batch import manifest as manifests
from prefrank.batch.grouping import Group, Grouper, Reject, ScoreColumns
from prefrank.batch.io import InputReader, PartWriter, check_path_format, merge_text, output_columns, write_rejects
from prefrank.config import ServerConfig
from prefrank.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

Engine = Literal["local", "ray"]


def _setting(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses.field metadata
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """Settings of one `prefrank score` run. Models and request limits come from ServerConfig."""

    input: pathlib.Path = _setting(pathlib.Path(), "candidate file: .csv, .tsv, .jsonl(.gz) or .parquet")
    output: pathlib.Path = _setting(pathlib.Path(), "scored file; its suffix picks the format")
    rejects: pathlib.Path | None = _setting(None, "JSONL file of rejected rows; None uses OUTPUT.rejects.jsonl")
    columns: ScoreColumns = _setting(ScoreColumns(), "which columns hold the query and candidate")
    chunk_rows: int = _setting(10_000, "rows read from the input at a time")
    part_rows: int = _setting(10_000, "scored rows per checkpoint part; --resume restarts at a part boundary")
    resume: bool = _setting(False, "continue an interrupted run from its manifest")
    overwrite: bool = _setting(False, "replace an existing output and discard an interrupted run")
    engine: Engine = _setting("local", "'local' (this process) or 'ray' (Ray Data with an actor pool)")
    ray_actors: int = _setting(2, "scoring actors in the Ray pool, each with its own model copy")
    work_dir: pathlib.Path | None = _setting(
        None, "Ray engine: directory for the staged shards; must be readable by every Ray node"
    )
    progress: bool = _setting(True, "show a progress bar on stderr")

    def __post_init__(self) -> None:
        for name in ("chunk_rows", "part_rows", "ray_actors"):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.engine not in ("local", "ray"):
            raise InvalidArgumentError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.resume and self.overwrite:
            raise InvalidArgumentError("--resume and --overwrite contradict each other; keep one")
        if self.resume and self.engine != "local":
            raise InvalidArgumentError("--resume works with --engine local only; rerun the Ray engine from the start")

    @property
    def rejects_path(self) -> pathlib.Path:
        return self.rejects or self.output.with_name(self.output.name + ".rejects.jsonl")

    @property
    def manifest_path(self) -> pathlib.Path:
        return self.output.with_name(self.output.name + ".manifest.json")

    @property
    def parts_dir(self) -> pathlib.Path:
        return self.output.with_name(self.output.name + ".parts")


@dataclass(frozen=True)
class RunSummary:
    """Counts and timing of a finished run."""

    rows_read: int
    rows_scored: int
    rows_rejected: int
    groups: int
    rejected_by_kind: dict[str, int]
    elapsed_seconds: float
    output: pathlib.Path
    rejects: pathlib.Path
    manifest: pathlib.Path

    @property
    def rows_per_second(self) -> float:
        return self.rows_scored / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


class BatchRun:
    """Bookkeeping for one run: checks the paths, writes parts and the manifest, merges at the end.

    Every part covers a contiguous range of input rows that ends at a group boundary, and the
    manifest names the parts already written. A resumed run reads the input again from the
    start, skips every group and reject before ``rows_done`` and writes the remaining parts.
    """

    def __init__(self, config: BatchConfig, server_config: ServerConfig, model: dict[str, Any]) -> None:
        self.config = config
        self.server_config = server_config
        self.output_format = check_path_format(config.output, "output")
        if not config.rejects_path.name.lower().endswith((".jsonl", ".jsonl.gz")):
            raise InvalidArgumentError(f"--rejects {config.rejects_path}: must end in .jsonl or .jsonl.gz")
        self.reader = InputReader(config.input, config.chunk_rows)
        if config.input.resolve() == config.output.resolve():
            raise InvalidArgumentError(f"output {config.output}: must differ from the input file")
        self._started = time.perf_counter()

        # Load or start the manifest
        input_info = manifests.fingerprint(config.input, self.reader.format)
        options = {"columns": dataclasses.asdict(config.columns), "output_format": self.output_format,
                   "max_candidates": server_config.max_candidates,
                   "max_text_chars": server_config.max_text_chars}
        fresh = manifests.new_manifest(engine=config.engine, input_info=input_info, output=config.output,
                                       rejects=config.rejects_path, options=options, model=model)
        if config.resume:
            self.manifest = self._load_for_resume(fresh)
        else:
            self._check_fresh_start()
            self.manifest = fresh
            config.parts_dir.mkdir(parents=True)
            manifests.write_json_atomic(config.manifest_path, self.manifest)
        self.rows_done = int(self.manifest["rows_done"])
        self._elapsed_before = float(self.manifest["timing"]["elapsed_seconds"])
        self.writer: PartWriter | None = None
        self.rejected_by_kind: Counter[str] = Counter(self.manifest["rejected_by_kind"])

    # --- start ---

    def _check_fresh_start(self) -> None:
        config = self.config
        existing = [p for p in (config.output, config.manifest_path, config.parts_dir) if p.exists()]
        if existing and not config.overwrite:
            raise InvalidArgumentError(
                f"{existing[0]} already exists; pass --resume to continue an interrupted run or "
                "--overwrite to replace it"
            )
        if config.parts_dir.exists():
            shutil.rmtree(config.parts_dir)
        config.manifest_path.unlink(missing_ok=True)

    def _load_for_resume(self, fresh: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        if not config.manifest_path.is_file() or not config.parts_dir.is_dir():
            raise InvalidArgumentError(f"--resume: no interrupted run for {config.output} "
                                       f"({config.manifest_path} or {config.parts_dir} is missing)")
        stored = manifests.load(config.manifest_path)
        manifests.check_resumable(stored, fresh, config.manifest_path)

        # Files of a part that was being written when the run stopped are not in the manifest.
        known = {name for part in stored["parts"] for name in (part["output"], part["rejects"])}
        for path in config.parts_dir.iterdir():
            if path.name not in known:
                path.unlink()
        stored["timing"]["runs"] += 1
        logger.info("Resuming %s after %d of about %d rows (%d parts done)", config.output,
                    stored["rows_done"], stored["input"]["estimated_rows"], len(stored["parts"]))
        return stored

    # --- reading ---

    def events(self) -> Iterator[Group | Reject]:
        """Yield rejects and complete groups in input order, skipping those before rows_done."""
        grouper = Grouper(self.config.columns, self.server_config.max_text_chars)
        total = 0
        for chunk in self.reader.chunks():
            if self.writer is None:
                grouper.check_columns(self.reader.columns, self.config.input)
                self.writer = self._part_writer()
            for row in chunk:
                for event in grouper.feed(row):
                    if self._is_new(event):
                        yield event
            total += len(chunk)
        for group in grouper.finish(total):
            if self._is_new(group):
                yield group
        if self.writer is None:
            self.writer = self._part_writer()
        self.rows_read = total

    def _part_writer(self) -> PartWriter:
        writer = PartWriter(self.output_format, output_columns(self.reader.columns), self.reader.arrow_schema)
        parts = self.manifest["parts"]
        if self.output_format == "parquet" and parts:
            import pyarrow.parquet as pq

            # A resumed run keeps the schema of the parts already written.
            writer.schema = pq.read_schema(self.config.parts_dir / parts[0]["output"])
        return writer

    def _is_new(self, event: Group | Reject) -> bool:
        return (event.end if isinstance(event, Group) else event.ordinal + 1) > self.rows_done

    # --- writing ---

    def rejects_part_path(self, index: int) -> pathlib.Path:
        return self.config.parts_dir / f"rejects-{index:06d}.jsonl"

    def write_part(
        self, rows: list[dict[str, Any]], rejects: list[Reject] | Counter[str], end: int, groups: int
    ) -> None:
        """Write one part's output and rejects, then record it in the manifest (atomically).

        Args:
            rows: Scored output rows in input order.
            rejects: The part's rejects, or the count per kind when the caller already wrote
                them to ``rejects_part_path`` of this part.
            end: Ordinal of the first input row after the part.
            groups: Query groups in the part.
        """
        if self.writer is None:
            raise RuntimeError("write_part called before the input was read")
        index = len(self.manifest["parts"])
        output_name = f"part-{index:06d}{self.writer.suffix}"
        rejects_path = self.rejects_part_path(index)
        self.writer.write(self.config.parts_dir / output_name, rows)
        if isinstance(rejects, Counter):
            kinds = rejects
        else:
            write_rejects(rejects_path, rejects)
            kinds = Counter(r.kind for r in rejects)
        rejected = sum(kinds.values())

        self.rejected_by_kind.update(kinds)
        counts = self.manifest["rows"]
        counts["scored"] += len(rows)
        counts["rejected"] += rejected
        counts["groups"] += groups
        counts["read"] = end
        self.manifest["parts"].append({"output": output_name, "rejects": rejects_path.name,
                                       "rows_start": self.rows_done, "rows_end": end, "scored": len(rows),
                                       "rejected": rejected})
        self.manifest["rows_done"] = self.rows_done = end
        self.manifest["rejected_by_kind"] = dict(self.rejected_by_kind)
        self._touch_timing()
        manifests.write_json_atomic(self.config.manifest_path, self.manifest)
        logger.debug("Part %d written: rows up to %d", index, end)

    def _touch_timing(self) -> None:
        timing = self.manifest["timing"]
        timing["updated_at"] = manifests.utc_now()
        timing["elapsed_seconds"] = round(self._elapsed_before + time.perf_counter() - self._started, 3)

    def finish(self) -> RunSummary:
        """Merge the parts into the output and rejects files, mark the manifest complete, clean up."""
        if self.writer is None:
            raise RuntimeError("finish called before the input was read")
        config = self.config
        parts = self.manifest["parts"]
        self.writer.merge([config.parts_dir / p["output"] for p in parts], config.output)
        merge_text([config.parts_dir / p["rejects"] for p in parts], config.rejects_path)

        counts = self.manifest["rows"]
        counts["read"] = self.rows_read
        self.manifest["status"] = "complete"
        self._touch_timing()
        self.manifest["timing"]["finished_at"] = self.manifest["timing"]["updated_at"]
        manifests.write_json_atomic(config.manifest_path, self.manifest)
        shutil.rmtree(config.parts_dir)
        summary = RunSummary(
            rows_read=counts["read"], rows_scored=counts["scored"], rows_rejected=counts["rejected"],
            groups=counts["groups"], rejected_by_kind=dict(self.rejected_by_kind),
            elapsed_seconds=self.manifest["timing"]["elapsed_seconds"], output=config.output,
            rejects=config.rejects_path, manifest=config.manifest_path,
        )
        logger.info("Scored %d rows in %d groups (%d rejected) in %.1f s; wrote %s", summary.rows_scored,
                    summary.groups, summary.rows_rejected, summary.elapsed_seconds, config.output)
        return summary

    def progress_bar(self) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=self.manifest["input"]["estimated_rows"], initial=self.rows_done, unit="row",
                    desc=f"scoring {self.config.input.name}", disable=not self.config.progress,
                    dynamic_ncols=True)
