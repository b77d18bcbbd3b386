"""Turn what a use case did to a batch of jobs into Metrics calls: counters once per label set, not per job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from application.ports import Finished, Metrics
from domain.job import Hold, Job, Outcome

RELEASED = "released"  # an attempt handed back at shutdown: no run row, the attempt is not spent
# Why a job is held, in the words an operator reads (the API's `held.reason`, the metrics' `reason` label): the
# job field or the queue setting that holds it back.
HeldReason = Literal["concurrency_key", "queue"]
HELD_REASONS: Final[dict[Hold, HeldReason]] = {Hold.KEY: "concurrency_key", Hold.QUEUE: "queue"}
# Who woke held jobs (the `by` label of jobs_woken): `sweep` counts wake-ups that were lost and made up for late.
BY_FINISH, BY_CANCEL, BY_RESCUE, BY_SWEEP, BY_QUEUE_CHANGE = "finish", "cancel", "rescue", "sweep", "queue_change"


def held_reason(reason: Hold) -> HeldReason:
    return HELD_REASONS[reason]


def submitted(metrics: Metrics, jobs: Iterable[Job]) -> None:
    for (queue, task), n in Counter((j.queue, j.task) for j in jobs).items():
        metrics.jobs_submitted(queue, task, n)


def claimed(metrics: Metrics, jobs: Sequence[Job]) -> None:
    late: dict[str, list[float]] = {}
    for job in jobs:
        started = job.started_at or job.updated_at
        late.setdefault(job.queue, []).append(max((started - job.run_at).total_seconds(), 0.0))
    for queue, seconds in late.items():
        metrics.jobs_claimed(queue, len(seconds))
        metrics.lateness(queue, seconds)


def finished(metrics: Metrics, outcomes: Iterable[Finished]) -> None:
    """Count ended attempts by outcome and time those that ran to an outcome."""
    counts: Counter[tuple[str, str, str]] = Counter()
    durations: dict[str, list[float]] = {}
    for done in outcomes:
        outcome = RELEASED if done.run is None else str(done.run.outcome)
        counts[done.job.queue, done.job.task, outcome] += 1
        if done.run is not None:
            durations.setdefault(done.job.task, []).append(done.run.duration_seconds)
    for task, seconds in durations.items():
        metrics.run_durations(task, seconds)
    for (queue, task, outcome), n in counts.items():
        metrics.jobs_finished(queue, task, outcome, n)


def cancelled(metrics: Metrics, jobs: Iterable[Job]) -> None:
    """Count cancelled jobs as finished with outcome `cancelled`, whether they were running or not (a worker whose
    job is cancelled has its outcome refused and counts nothing, so each cancel is counted once, here)."""
    for (queue, task), n in Counter((j.queue, j.task) for j in jobs).items():
        metrics.jobs_finished(queue, task, str(Outcome.CANCELLED), n)


def woken(metrics: Metrics, jobs: Iterable[Job], *, by: str) -> None:
    """Count held jobs woken (dispatched because a slot freed), per queue, by who woke them."""
    for queue, n in Counter(j.queue for j in jobs).items():
        metrics.jobs_woken(queue, by, n)
