"""Submit jobs: one, or a batch of up to 10,000, all or nothing; idempotent by key."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from attrs import frozen

from application import reporting
from application.identity import new_ids
from application.ports import (
    NO_METRICS,
    Clock,
    Dispatchable,
    Dispatcher,
    JobRepository,
    Metrics,
    Submitted,
    TaskRegistry,
    Wakeup,
)
from domain.errors import InvalidInput, Unavailable, UnknownTask
from domain.job import Job, JobSpec, State

MAX_BATCH: Final = 10_000
log = logging.getLogger("gnomon.submit")


@frozen
class SubmitJobs:
    jobs: JobRepository
    dispatcher: Dispatcher
    clock: Clock
    tasks: TaskRegistry
    wakeup: Wakeup
    metrics: Metrics = NO_METRICS

    async def __call__(self, specs: Sequence[JobSpec], *, prefix: str | None = "jobs") -> list[Submitted]:
        """Store the jobs (all or nothing) and dispatch those due now. prefix=None names fields bare."""
        self._check(specs, prefix)
        now = self.clock.now()
        made = Job.create_many(new_ids(now, len(specs)), specs, now=now)
        submitted = await self.jobs.add(made)
        fresh = [s.job for s in submitted if s.created]
        reporting.submitted(self.metrics, fresh)
        await dispatch(self.dispatcher, [j for j in fresh if j.state is State.QUEUED])
        if any(j.state is State.SCHEDULED for j in fresh):
            await self.wakeup.notify()
        return submitted

    def _check(self, specs: Sequence[JobSpec], prefix: str | None) -> None:
        if not 1 <= len(specs) <= MAX_BATCH:
            raise InvalidInput({prefix or "jobs": f"give between 1 and {MAX_BATCH} jobs"})
        known = self.tasks.names()
        problems: dict[str, str] = {}
        for i, spec in enumerate(specs):
            found = spec.problems()
            if known is not None and spec.task not in known:
                found |= UnknownTask("task", spec.task).errors
            if found:  # the field paths are only written out for a spec that breaks a rule
                where = "" if prefix is None else f"{prefix}[{i}]."
                problems |= {where + name: message for name, message in found.items()}
        if problems:
            raise InvalidInput(problems)


async def dispatch(dispatcher: Dispatcher, jobs: Sequence[Dispatchable]) -> None:
    """Push to the dispatch queue; if it is down, the scheduler's re-dispatch sweep sends them later. Held jobs
    (flow control) stay out: they are pushed when woken."""
    jobs = [job for job in jobs if not job.held]
    if not jobs:
        return
    try:
        await dispatcher.push(jobs)
    except Unavailable as exc:
        log.warning("dispatch unavailable, %d jobs left for re-dispatch: %s", len(jobs), exc)
