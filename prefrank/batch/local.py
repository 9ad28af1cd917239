"""The local engine: read, group, score with Ranker.rerank in this process, write checkpointed parts."""

from __future__ import annotations

import logging
from typing import Any

from prefrank.batch.grouping import Reject
from prefrank.batch.run import BatchRun, RunSummary
from prefrank.batch.scoring import score_group
from prefrank.ranking import Ranker

logger = logging.getLogger(__name__)


def run_local(run: BatchRun, ranker: Ranker) -> RunSummary:
    """Score every group of the run's input with ranker and write the output.

    A part is written once at least ``part_rows`` rows are scored and the current group is
    complete, so a part never splits a query group.
    """
    max_candidates = run.server_config.max_candidates
    part_rows = run.config.part_rows
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    groups = 0
    end = run.rows_done
    with run.progress_bar() as bar:
        for event in run.events():
            if isinstance(event, Reject):
                rejects.append(event)
                continue
            scored, failed = score_group(ranker, event, max_candidates)
            rows.extend(scored)
            rejects.extend(failed)
            groups += 1
            bar.update(event.end - end)
            end = event.end
            if len(rows) >= part_rows:
                run.write_part(rows, rejects, event.end, groups)
                rows, rejects, groups = [], [], 0
        final_end = run.rows_read
        if rows or rejects or final_end > run.rows_done:
            run.write_part(rows, rejects, final_end, groups)
        bar.update(max(final_end - end, 0))
    return run.finish()
