"""Read jobs and their history; cancel and retry them by hand."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from attrs import frozen

from application import reporting
from application.manage_queues import with_settings
from application.ports import (
    NO_METRICS,
    Cancellations,
    Clock,
    Dispatcher,
    Finished,
    JobFilter,
    JobRepository,
    Metrics,
    Page,
    QueueSettingsRepository,
    QueueStats,
)
from application.submit_jobs import dispatch
from domain.errors import StaleWrite, Unavailable
from domain.job import Job, Run

ATTEMPTS_ON_RACE = 5
log = logging.getLogger("gnomon.jobs")


@frozen
class GetJob:
    jobs: JobRepository

    async def __call__(self, job_id: str) -> Job:
        return await self.jobs.get(job_id)


@frozen
class ListJobs:
    jobs: JobRepository

    async def __call__(self, where: JobFilter, *, limit: int, cursor: str | None) -> Page[Job]:
        return await self.jobs.list(where, limit=limit, cursor=cursor)


@frozen
class JobRuns:
    jobs: JobRepository

    async def __call__(self, job_id: str) -> list[Run]:
        return await self.jobs.runs(job_id)


@frozen
class CancelJob:
    """Cancel a job; a running attempt is closed as `cancelled` and its worker is told at once through
    `cancellations` when there are any, else at its next heartbeat. Held jobs the cancel makes room for (flow
    control) are pushed to `dispatcher` when there is one, else the scheduler's sweep sends them."""

    jobs: JobRepository
    clock: Clock
    cancellations: Cancellations | None = None
    dispatcher: Dispatcher | None = None
    metrics: Metrics = NO_METRICS

    async def __call__(self, job_id: str) -> Job:
        for _ in range(ATTEMPTS_ON_RACE):
            job, run = (await self.jobs.get(job_id)).cancel(now=self.clock.now())
            try:
                woken = await self.jobs.save(job, run)
            except StaleWrite:
                continue  # the job moved under us (claimed, finished): decide again on the new state
            await after_cancels([Finished(job=job, run=run)], woken, dispatcher=self.dispatcher,
                                cancellations=self.cancellations, metrics=self.metrics)
            return job
        raise StaleWrite(f"job {job_id}")


async def after_cancels(changes: Sequence[Finished], woken: Sequence[Job], *, dispatcher: Dispatcher | None,
                        cancellations: Cancellations | None, metrics: Metrics) -> None:
    """Once cancels are committed (by hand, or a schedule's cancel_other): push the held jobs they woke (without a
    dispatcher, the scheduler's sweep sends them), tell the workers of the jobs that were running now rather than
    at their heartbeat, and count both."""
    if dispatcher is not None:
        await dispatch(dispatcher, woken)
    running = [change.job.id for change in changes if change.run is not None]
    if cancellations is not None and running:
        try:
            await cancellations.announce(running)
        except Unavailable as exc:
            log.warning("%d running jobs cancelled (%s); their workers will see it at their heartbeat: %s",
                        len(running), ", ".join(running[:3]), exc)
    reporting.cancelled(metrics, [change.job for change in changes])
    reporting.woken(metrics, woken, by=reporting.BY_CANCEL)


@frozen
class RetryJob:
    jobs: JobRepository
    dispatcher: Dispatcher
    clock: Clock

    async def __call__(self, job_id: str) -> Job:
        job = (await self.jobs.get(job_id)).retry_now(now=self.clock.now())
        await self.jobs.save(job)
        await dispatch(self.dispatcher, [job])
        return job


@frozen
class QueueOverview:
    """Per queue: jobs by state, oldest queued job, last minute's throughput, and its settings (flow control)."""

    jobs: JobRepository
    clock: Clock
    queues: QueueSettingsRepository | None = None

    async def __call__(self) -> list[QueueStats]:
        stats = await self.jobs.queue_stats(self.clock.now())
        if self.queues is None:
            return stats
        return with_settings(stats, await self.queues.all())
