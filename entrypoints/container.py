"""The composition root: the only place that decides which adapters are real."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from dependency_injector import containers, providers
from redis.asyncio import Redis

from adapters.memory.cancellations import InMemoryCancellations
from adapters.memory.clock import SystemClock
from adapters.memory.dispatcher import InMemoryDispatcher
from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.queue_settings import InMemoryQueueSettingsRepository
from adapters.memory.schedules import InMemoryScheduleRepository
from adapters.memory.wakeup import InMemoryWakeup
from adapters.metrics.prometheus import PrometheusMetrics, process_registry
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import create_pool, open_pool
from adapters.postgres.queue_settings import PgQueueSettingsRepository
from adapters.postgres.schedule_repository import PgScheduleRepository
from adapters.postgres.wakeup import PgWakeup
from adapters.redis.cancellations import RedisCancellations
from adapters.redis.dispatcher import RedisDispatcher
from adapters.tasks.builtin import builtin_tasks
from adapters.tasks.registry import ImportedTaskRegistry
from application.bulk_jobs import CancelJobs, RetryJobs
from application.manage_jobs import CancelJob, GetJob, JobRuns, ListJobs, QueueOverview, RetryJob
from application.manage_queues import UpdateQueue
from application.manage_schedules import (
    BackfillSchedule,
    CreateSchedule,
    DeleteSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    PreviewSchedule,
    ResumeSchedule,
    ScheduleOccurrences,
    TriggerSchedule,
    UpdateSchedule,
)
from application.ports import NO_METRICS
from application.queue_gate import QueueGate
from application.scheduler import SchedulerLoop, SchedulerTick, TickSettings
from application.submit_jobs import SubmitJobs
from application.throughput import QueueThroughput
from application.worker import Worker, WorkerSettings
from entrypoints.settings import Settings, SettingsError

QUEUE_STATS_EVERY = 5.0  # seconds between the scheduler's updates of the queue depth gauges


class MemoryAdapters(containers.DeclarativeContainer):
    """Everything in this process: for tests and `gnomon dev`."""

    tasks = providers.Dependency()
    jobs = providers.Singleton(InMemoryJobRepository)
    schedules = providers.Singleton(InMemoryScheduleRepository, jobs=jobs)
    dispatcher = providers.Singleton(InMemoryDispatcher)
    wakeup = providers.Singleton(InMemoryWakeup)
    cancellations = providers.Singleton(InMemoryCancellations)
    queue_settings = providers.Singleton(InMemoryQueueSettingsRepository, jobs=jobs)


class PostgresAdapters(containers.DeclarativeContainer):
    """PostgreSQL for state and history; Redis for dispatch when a URL is given (else in-process)."""

    config = providers.Configuration(strict=True)
    tasks = providers.Dependency()
    pool = providers.Singleton(create_pool, conninfo=config.database_url, max_size=config.pool_size,
                               generic_plans=config.generic_plans)
    jobs = providers.Singleton(PgJobRepository, pool=pool)
    schedules = providers.Singleton(PgScheduleRepository, pool=pool)
    wakeup = providers.Singleton(PgWakeup, pool=pool, conninfo=config.database_url)
    redis = providers.Singleton(Redis.from_url, config.redis_url, max_connections=config.redis_connections)
    dispatcher = providers.Singleton(RedisDispatcher, redis, config.redis_prefix,
                                     pace_seconds=config.dispatch_pace_seconds)
    cancellations = providers.Singleton(RedisCancellations, redis, config.redis_prefix)
    queue_settings = providers.Singleton(PgQueueSettingsRepository, pool=pool)


class UseCases(containers.DeclarativeContainer):
    adapters = providers.DependenciesContainer()
    clock = providers.Singleton(SystemClock)
    metrics = providers.Object(NO_METRICS)  # Runtime puts the process's Prometheus metrics here

    submit_jobs = providers.Factory(SubmitJobs, jobs=adapters.jobs, dispatcher=adapters.dispatcher, clock=clock,
                                    tasks=adapters.tasks, wakeup=adapters.wakeup, metrics=metrics)
    get_job = providers.Factory(GetJob, jobs=adapters.jobs)
    list_jobs = providers.Factory(ListJobs, jobs=adapters.jobs)
    job_runs = providers.Factory(JobRuns, jobs=adapters.jobs)
    cancel_job = providers.Factory(CancelJob, jobs=adapters.jobs, clock=clock, cancellations=adapters.cancellations,
                                   dispatcher=adapters.dispatcher, metrics=metrics)
    retry_job = providers.Factory(RetryJob, jobs=adapters.jobs, dispatcher=adapters.dispatcher, clock=clock)
    queue_overview = providers.Factory(QueueOverview, jobs=adapters.jobs, clock=clock, queues=adapters.queue_settings)
    update_queue = providers.Factory(UpdateQueue, queues=adapters.queue_settings, jobs=adapters.jobs,
                                     dispatcher=adapters.dispatcher, clock=clock, metrics=metrics)
    queue_throughput = providers.Factory(QueueThroughput, jobs=adapters.jobs, clock=clock)
    retry_jobs = providers.Factory(RetryJobs, jobs=adapters.jobs, dispatcher=adapters.dispatcher, clock=clock)
    cancel_jobs = providers.Factory(CancelJobs, jobs=adapters.jobs, clock=clock, cancellations=adapters.cancellations,
                                    dispatcher=adapters.dispatcher, metrics=metrics)

    create_schedule = providers.Factory(CreateSchedule, schedules=adapters.schedules, clock=clock,
                                        tasks=adapters.tasks, wakeup=adapters.wakeup)
    update_schedule = providers.Factory(UpdateSchedule, schedules=adapters.schedules, clock=clock,
                                        tasks=adapters.tasks, wakeup=adapters.wakeup)
    delete_schedule = providers.Factory(DeleteSchedule, schedules=adapters.schedules)
    pause_schedule = providers.Factory(PauseSchedule, schedules=adapters.schedules, clock=clock)
    resume_schedule = providers.Factory(ResumeSchedule, schedules=adapters.schedules, jobs=adapters.jobs,
                                        dispatcher=adapters.dispatcher, clock=clock,
                                        cancellations=adapters.cancellations, metrics=metrics)
    trigger_schedule = providers.Factory(TriggerSchedule, schedules=adapters.schedules, jobs=adapters.jobs,
                                         dispatcher=adapters.dispatcher, clock=clock,
                                         cancellations=adapters.cancellations, metrics=metrics)
    backfill_schedule = providers.Factory(BackfillSchedule, schedules=adapters.schedules, jobs=adapters.jobs,
                                          dispatcher=adapters.dispatcher, clock=clock,
                                          cancellations=adapters.cancellations, metrics=metrics)
    preview_schedule = providers.Factory(PreviewSchedule, schedules=adapters.schedules, clock=clock)
    get_schedule = providers.Factory(GetSchedule, schedules=adapters.schedules)
    list_schedules = providers.Factory(ListSchedules, schedules=adapters.schedules)
    schedule_occurrences = providers.Factory(ScheduleOccurrences, schedules=adapters.schedules)


class Runtime:
    """A process's wiring: the use cases on the adapters `settings` choose, and their lifecycle."""

    def __init__(self, settings: Settings, adapters: containers.Container) -> None:
        self.settings = settings
        self.adapters = adapters
        self.registry = process_registry()  # what /metrics shows: one registry per process
        self.metrics = PrometheusMetrics(self.registry)
        self.use_cases = UseCases(adapters=adapters, metrics=providers.Object(self.metrics))

    @property
    def persistent(self) -> bool:
        return self.settings.database_url is not None

    async def start(self) -> None:
        if self.persistent:
            await open_pool(self.adapters.pool())

    async def stop(self) -> None:
        if self.persistent:
            await self.adapters.wakeup().close()
            if self.settings.redis_url is not None:
                await self.adapters.cancellations().close()
                await self.adapters.redis().aclose()
            await self.adapters.pool().close()

    async def readiness(self) -> dict[str, bool]:
        """Can this process reach what it needs? (the API's /readyz)"""
        if not self.persistent:
            return {"memory": True}
        checks = {"postgresql": await _answers(self._ping_postgres)}
        if self.settings.redis_url is not None:
            checks["redis"] = await _answers(self._ping_redis)
        return checks

    async def _ping_postgres(self) -> None:
        async with self.adapters.pool().connection(timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def _ping_redis(self) -> None:
        await self.adapters.redis().ping()

    def tick(self) -> SchedulerTick:
        s = self.settings
        return SchedulerTick(
            self.adapters.jobs(), self.adapters.schedules(), self.adapters.dispatcher(),
            self.use_cases.clock(),
            TickSettings(dispatch_timeout=timedelta(seconds=s.dispatch_timeout_seconds), retention=s.retention),
            self.metrics, cancellations=self.adapters.cancellations())

    def scheduler_loop(self) -> SchedulerLoop:
        return SchedulerLoop(self.tick(), self.adapters.jobs(), self.adapters.schedules(), self.adapters.wakeup(),
                             self.use_cases.clock(), stats_every=QUEUE_STATS_EVERY)

    def worker(self, *, queues: tuple[str, ...], concurrency: int, worker_id: str) -> Worker:
        s = self.settings
        settings = WorkerSettings(worker_id=worker_id, queues=queues, concurrency=concurrency,
                                  lease_seconds=s.lease_seconds, heartbeat_seconds=s.heartbeat_seconds,
                                  shutdown_grace_seconds=s.shutdown_grace_seconds)
        gate = QueueGate(self.adapters.queue_settings(), queues)
        return Worker(self.adapters.jobs(), self.adapters.dispatcher(), self.adapters.tasks(),
                      self.use_cases.clock(), settings, self.metrics, cancellations=self.adapters.cancellations(),
                      gate=gate)


def task_registry(settings: Settings) -> ImportedTaskRegistry:
    return ImportedTaskRegistry(settings.tasks, builtin_tasks(settings.http_allow, settings.http_allow_private))


async def _answers(ping: Callable[[], Awaitable[None]]) -> bool:
    try:
        await asyncio.wait_for(ping(), 3)
    except Exception:  # any failure to answer means "not ready"; the reason is logged by the driver
        return False
    return True


def build(settings: Settings, *, scheduler_only: bool = False, single_process: bool = False) -> Runtime:
    """Choose the adapters: memory unless a database URL is given (SPEC §7). A process that only schedules
    plans its statements once (adapters/postgres/pool.py, generic_plans). Only a single process that runs
    every service (`gnomon dev`) may keep dispatch in its own memory next to a real database."""
    tasks = providers.Object(task_registry(settings))
    if settings.database_url is None:
        if settings.redis_url is not None:
            raise SettingsError("GNOMON_REDIS_URL needs GNOMON_DATABASE_URL: Redis is never the only copy")
        return Runtime(settings, MemoryAdapters(tasks=tasks))
    if settings.redis_url is None and not single_process:
        raise SettingsError("GNOMON_DATABASE_URL needs GNOMON_REDIS_URL too: the API, schedulers and workers "
                            "hand jobs to each other through Redis")
    adapters = PostgresAdapters(tasks=tasks)
    adapters.config.from_dict({
        "database_url": settings.database_url, "redis_url": settings.redis_url or "redis://unused",
        "redis_prefix": settings.redis_prefix, "pool_size": 10, "redis_connections": 64,
        "generic_plans": scheduler_only, "dispatch_pace_seconds": settings.dispatch_pace_seconds,
    })
    if settings.redis_url is None:  # one process only (gnomon dev --database-url): dispatch stays in it
        adapters.dispatcher.override(providers.Singleton(InMemoryDispatcher))
        adapters.cancellations.override(providers.Singleton(InMemoryCancellations))
    return Runtime(settings, adapters)
