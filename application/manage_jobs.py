"""Read jobs and their history; cancel and retry them by hand."""

from __future__ import annotations

from attrs import frozen

from application.ports import Clock, Dispatcher, JobFilter, JobRepository, Page, QueueStats
from application.submit_jobs import dispatch
from domain.errors import StaleWrite
from domain.job import Job, Run

ATTEMPTS_ON_RACE = 5


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
    """Cancel a job; a running attempt is closed as `cancelled` and its worker is told at its heartbeat."""

    jobs: JobRepository
    clock: Clock

    async def __call__(self, job_id: str) -> Job:
        for _ in range(ATTEMPTS_ON_RACE):
            job, run = (await self.jobs.get(job_id)).cancel(now=self.clock.now())
            try:
                await self.jobs.save(job, run)
                return job
            except StaleWrite:
                continue  # the job moved under us (claimed, finished): decide again on the new state
        raise StaleWrite(f"job {job_id}")


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
    jobs: JobRepository
    clock: Clock

    async def __call__(self) -> list[QueueStats]:
        return await self.jobs.queue_stats(self.clock.now())
