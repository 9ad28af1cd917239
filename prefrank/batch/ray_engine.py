"""The Ray engine: whole-group shards read by Ray Data and scored by an actor pool, one model per actor.

The driver makes one streaming pass over the input with the local engine's reader and grouping,
so line numbers, rejects and query groups are the same. It writes Parquet shards that hold whole
query groups only. Ray Data reads the shards in order, ``map_batches`` sends each shard to an
actor that scores it with ``Ranker.rerank``, and the driver writes the results, in input order,
with the same part writer as the local engine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import pickle
import shutil
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from prefrank.batch.grouping import Group, Reject
from prefrank.batch.io import write_rejects
from prefrank.batch.run import BatchRun, RunSummary
from prefrank.batch.scoring import score_candidates, scored_row
from prefrank.config import ServerConfig
from prefrank.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class Shard:
    """One staged Parquet file of whole query groups and the input rows it covers."""

    path: pathlib.Path
    rows: int
    groups: int
    end: int
    reject_kinds: Counter[str]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ConfigError("--engine ray needs Ray: pip install 'prefrank[ray]' (or make install)") from err
    return ray


def _write_shard(path: pathlib.Path, groups: list[Group], first_group: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list[Any]] = {"__group": [], "__group_size": [], "__query": [], "__id": [], "__text": [],
                                     "__row": []}
    for offset, group in enumerate(groups):
        for row, candidate_id, text in zip(group.rows, group.ids, group.texts, strict=True):
            columns["__group"].append(first_group + offset)
            columns["__group_size"].append(len(group.rows))
            columns["__query"].append(group.query)
            columns["__id"].append(candidate_id)
            columns["__text"].append(text)
            # Pickle keeps the row's Python values exactly as the local engine reads them.
            columns["__row"].append(pickle.dumps(row.values, protocol=pickle.HIGHEST_PROTOCOL))
    table = pa.table(columns)
    # One row group per file: Ray Data never splits a row group, so a batch contains whole groups.
    pq.write_table(table, path, row_group_size=max(len(table), 1))
    return len(table)


def stage(run: BatchRun, stage_dir: pathlib.Path) -> list[Shard]:
    """Read the input once and write whole-group shards and the rejects of each shard."""
    shards: list[Shard] = []
    groups: list[Group] = []
    rejects: list[Reject] = []
    rows = 0
    group_count = 0

    def flush(end: int) -> None:
        nonlocal groups, rejects, rows
        index = len(shards)
        path = stage_dir / f"shard-{index:06d}.parquet"
        written = _write_shard(path, groups, group_count - len(groups)) if groups else 0
        write_rejects(run.rejects_part_path(index), rejects)
        shards.append(Shard(path, written, len(groups), end, Counter(r.kind for r in rejects)))
        groups, rejects, rows = [], [], 0

    for event in run.events():
        if isinstance(event, Reject):
            rejects.append(event)
            continue
        groups.append(event)
        group_count += 1
        rows += len(event.rows)
        if rows >= run.config.part_rows:
            flush(event.end)
    if groups or rejects or run.rows_read > (shards[-1].end if shards else 0):
        flush(run.rows_read)
    logger.info("Staged %d query groups in %d shards under %s", group_count, len(shards), stage_dir)
    return shards


class ShardScorer:
    """Ray actor: loads the Ranker once, then scores whole-group batches with Ranker.rerank.

    Raises:
        ConfigError: the actor loaded other models than the driver recorded in the manifest, for
            example because a bundle's ``current`` changed after the run started.
    """

    def __init__(self, server_config: dict[str, Any], expected_model: dict[str, Any]) -> None:
        from prefrank.batch.manifest import model_record
        from prefrank.runtime import load_ranker

        self._config = ServerConfig(**server_config)
        self._ranker = load_ranker(self._config)
        loaded = model_record(self._ranker)
        if loaded != expected_model:
            raise ConfigError(f"a Ray actor loaded {loaded!r}, but the run started with {expected_model!r}; "
                              "keep the models fixed during a run and score again")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["__group"])
        scores = np.empty(count, dtype=np.float64)
        relevance = np.empty(count, dtype=np.float64)
        ranks = np.empty(count, dtype=np.int64)
        start = 0
        while start < count:
            stop = start
            while stop < count and batch["__group"][stop] == batch["__group"][start]:
                stop += 1
            if stop - start != batch["__group_size"][start]:
                raise RuntimeError(
                    f"query group {batch['__group'][start]} arrived split: {stop - start} of "
                    f"{batch['__group_size'][start]} rows in one batch; shards must reach map_batches whole"
                )
            result = score_candidates(self._ranker, str(batch["__query"][start]),
                                      [str(i) for i in batch["__id"][start:stop]],
                                      [str(t) for t in batch["__text"][start:stop]], self._config.max_candidates)
            scores[start:stop] = result.scores
            relevance[start:stop] = result.relevance
            ranks[start:stop] = result.ranks
            start = stop
        return {"__row": batch["__row"], "score": scores, "relevance_score": relevance, "rank": ranks}


def _actor_cpus(ray: Any, actors: int) -> float:
    """Return the CPUs to reserve per actor so that one CPU stays free for listing the shards.

    Ray Data lists the shard files in a task that needs a whole CPU. If the actors reserve every
    CPU, that task never starts and the run waits forever.
    """
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus < 2:
        raise ConfigError(f"the Ray cluster has {cpus:g} CPUs; the Ray engine needs at least 2 "
                          "(one lists the shards, the rest run the scoring actors)")
    return min(1.0, (cpus - 1) / actors)


def run_ray(run: BatchRun) -> RunSummary:
    """Stage the input, score the shards on Ray, and write the output like the local engine."""
    ray = _import_ray()
    config = run.config
    stage_dir = config.work_dir or config.output.with_name(config.output.name + ".ray-stage")
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)

    # Stage
    shards = stage(run, stage_dir)
    scored_shards = [s for s in shards if s.rows]

    # Score on Ray
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        logger.info("Connecting to Ray at %s", address or "a new local instance")
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    results: Any = iter(())
    if scored_shards:
        # One read task per shard; by default Ray Data packs small files into one task, which
        # would feed the whole input to a single actor.
        dataset = ray.data.read_parquet([str(s.path) for s in scored_shards], file_extensions=["parquet"],
                                        override_num_blocks=len(scored_shards))
        dataset = dataset.map_batches(
            ShardScorer, batch_size=None, batch_format="numpy", num_cpus=_actor_cpus(ray, config.ray_actors),
            compute=ray.data.ActorPoolStrategy(size=config.ray_actors),
            fn_constructor_kwargs={"server_config": dataclasses.asdict(run.server_config),
                                   "expected_model": run.manifest["model"]},
        )
        results = iter(dataset.iter_rows())

    # Write parts in input order
    with run.progress_bar() as bar:
        for shard in shards:
            rows = []
            for _ in range(shard.rows):
                result = next(results)
                rows.append(scored_row(pickle.loads(result["__row"]), result["score"],
                                       result["relevance_score"], result["rank"]))
            run.write_part(rows, shard.reject_kinds, shard.end, shard.groups)
            bar.update(shard.rows + sum(shard.reject_kinds.values()))
    shutil.rmtree(stage_dir)
    return run.finish()
