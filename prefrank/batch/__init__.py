"""Batch scoring of candidate files with the service's scoring path, in this process or on Ray."""

from __future__ import annotations

from prefrank.batch.grouping import ScoreColumns
from prefrank.batch.run import BatchConfig, BatchRun, RunSummary
from prefrank.config import ServerConfig
from prefrank.ranking import Ranker

__all__ = ["BatchConfig", "RunSummary", "ScoreColumns", "score_file"]


def score_file(config: BatchConfig, server_config: ServerConfig, ranker: Ranker | None = None) -> RunSummary:
    """Score config.input into config.output with the engine config.engine names.

    Args:
        config: Paths, column mapping, chunking and engine.
        server_config: Models and request limits, the same settings the service uses.
        ranker: A loaded rerank-only Ranker for the local engine; None loads one from server_config.
            The Ray engine loads one per actor and uses this one only for the manifest.

    Raises:
        InvalidArgumentError: a path, column or option is invalid, or --resume does not match.
        ModelLoadError: a model directory does not load.

    Example:
        >>> config = BatchConfig(input=Path("nbest.tsv"), output=Path("scored.parquet"),
        ...                      columns=ScoreColumns(query_id="seg_id", query="source", text="target"))
        >>> score_file(config, ServerConfig.from_env()).rows_scored
        7941
    """
    from prefrank.batch.manifest import model_record
    from prefrank.runtime import load_ranker

    ranker = ranker or load_ranker(server_config)
    run = BatchRun(config, server_config, model_record(ranker))
    if config.engine == "ray":
        from prefrank.batch.ray_engine import run_ray

        return run_ray(run)
    from prefrank.batch.local import run_local

    return run_local(run, ranker)
