"""Turn what a use case did to a batch of jobs into Metrics calls: counters once per label set, not per job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from application.ports import Finished, Metrics
from domain.job import Job

RELEASED = "released"  # an attempt handed back at shutdown: no run row, the attempt is not spent


def submitted(metrics: Metrics, jobs: Iterable[Job]) -> None:
    for (queue, task), n in Counter((j.queue, j.task) for j in jobs).items():
        metrics.jobs_submitted(queue, task, n)


def claimed(metrics: Metrics, jobs: Sequence[Job]) -> None:
    for queue, n in Counter(j.queue for j in jobs).items():
        metrics.jobs_claimed(queue, n)
    for job in jobs:
        started = job.started_at or job.updated_at
        metrics.lateness(job.queue, max((started - job.run_at).total_seconds(), 0.0))


def finished(metrics: Metrics, outcomes: Iterable[Finished]) -> None:
    """Count ended attempts by outcome and time those that ran to an outcome."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for done in outcomes:
        outcome = RELEASED if done.run is None else str(done.run.outcome)
        counts[done.job.queue, done.job.task, outcome] += 1
        if done.run is not None:
            metrics.run_duration(done.job.task, done.run.duration_seconds)
    for (queue, task, outcome), n in counts.items():
        metrics.jobs_finished(queue, task, outcome, n)
