"""Read jobs and their history; cancel and retry them by hand."""

from __future__ import annotations

import logging

from attrs import frozen

from application.manage_queues import with_settings
from application.ports import (
    Cancellations,
    Clock,
    Dispatcher,
    JobFilter,
    JobRepository,
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

    async def __call__(self, job_id: str) -> Job:
        for _ in range(ATTEMPTS_ON_RACE):
            job, run = (await self.jobs.get(job_id)).cancel(now=self.clock.now())
            try:
                woken = await self.jobs.save(job, run)
            except StaleWrite:
                continue  # the job moved under us (claimed, finished): decide again on the new state
            if self.dispatcher is not None:
                await dispatch(self.dispatcher, woken)
            if run is not None:  # it was running: tell its worker now rather than at its heartbeat
                await self._announce(job_id)
            return job
        raise StaleWrite(f"job {job_id}")

    async def _announce(self, job_id: str) -> None:
        if self.cancellations is None:
            return
        try:
            await self.cancellations.announce([job_id])
        except Unavailable as exc:
            log.warning("job %s cancelled; its worker will see it at its heartbeat: %s", job_id, exc)


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
