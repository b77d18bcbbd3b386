"""The composition root: the only place that decides which adapters are real."""

from __future__ import annotations

from datetime import timedelta

from dependency_injector import containers, providers

from adapters.memory.clock import SystemClock
from adapters.memory.dispatcher import InMemoryDispatcher
from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.schedules import InMemoryScheduleRepository
from adapters.memory.wakeup import InMemoryWakeup
from adapters.tasks.builtin import builtin_tasks
from adapters.tasks.registry import ImportedTaskRegistry
from application.manage_jobs import CancelJob, GetJob, JobRuns, ListJobs, QueueOverview, RetryJob
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
from application.scheduler import SchedulerLoop, SchedulerTick, TickSettings
from application.submit_jobs import SubmitJobs
from application.worker import Worker, WorkerSettings
from entrypoints.settings import Settings


class MemoryAdapters(containers.DeclarativeContainer):
    """Everything in this process: for tests and `gnomon dev`."""

    tasks = providers.Dependency()
    jobs = providers.Singleton(InMemoryJobRepository)
    schedules = providers.Singleton(InMemoryScheduleRepository, jobs=jobs)
    dispatcher = providers.Singleton(InMemoryDispatcher)
    wakeup = providers.Singleton(InMemoryWakeup)
    resources = providers.Object({})
    readiness = providers.Object({})


class UseCases(containers.DeclarativeContainer):
    adapters = providers.DependenciesContainer()
    clock = providers.Singleton(SystemClock)

    submit_jobs = providers.Factory(SubmitJobs, jobs=adapters.jobs, dispatcher=adapters.dispatcher, clock=clock,
                                    tasks=adapters.tasks, wakeup=adapters.wakeup)
    get_job = providers.Factory(GetJob, jobs=adapters.jobs)
    list_jobs = providers.Factory(ListJobs, jobs=adapters.jobs)
    job_runs = providers.Factory(JobRuns, jobs=adapters.jobs)
    cancel_job = providers.Factory(CancelJob, jobs=adapters.jobs, clock=clock)
    retry_job = providers.Factory(RetryJob, jobs=adapters.jobs, dispatcher=adapters.dispatcher, clock=clock)
    queue_overview = providers.Factory(QueueOverview, jobs=adapters.jobs, clock=clock)

    create_schedule = providers.Factory(CreateSchedule, schedules=adapters.schedules, clock=clock,
                                        tasks=adapters.tasks, wakeup=adapters.wakeup)
    update_schedule = providers.Factory(UpdateSchedule, schedules=adapters.schedules, clock=clock,
                                        tasks=adapters.tasks, wakeup=adapters.wakeup)
    delete_schedule = providers.Factory(DeleteSchedule, schedules=adapters.schedules)
    pause_schedule = providers.Factory(PauseSchedule, schedules=adapters.schedules, clock=clock)
    resume_schedule = providers.Factory(ResumeSchedule, schedules=adapters.schedules, jobs=adapters.jobs,
                                        dispatcher=adapters.dispatcher, clock=clock)
    trigger_schedule = providers.Factory(TriggerSchedule, schedules=adapters.schedules, jobs=adapters.jobs,
                                         dispatcher=adapters.dispatcher, clock=clock)
    backfill_schedule = providers.Factory(BackfillSchedule, schedules=adapters.schedules, jobs=adapters.jobs,
                                          dispatcher=adapters.dispatcher, clock=clock)
    preview_schedule = providers.Factory(PreviewSchedule, schedules=adapters.schedules, clock=clock)
    get_schedule = providers.Factory(GetSchedule, schedules=adapters.schedules)
    list_schedules = providers.Factory(ListSchedules, schedules=adapters.schedules)
    schedule_occurrences = providers.Factory(ScheduleOccurrences, schedules=adapters.schedules)


class Runtime:
    """A process's wiring: the use cases on the adapters `settings` choose, and their lifecycle."""

    def __init__(self, settings: Settings, adapters: containers.Container) -> None:
        self.settings = settings
        self.adapters = adapters
        self.use_cases = UseCases(adapters=adapters)

    async def start(self) -> None:
        for resource in self._resources():
            opener = getattr(resource, "open", None)
            if opener is not None:
                await opener()

    async def stop(self) -> None:
        for resource in reversed(self._resources()):
            closer = getattr(resource, "close", None)
            if closer is not None:
                await closer()

    def _resources(self) -> list[object]:
        return [self.adapters.resources()[name] for name in ("pool", "redis", "wakeup")
                if name in self.adapters.resources()]

    async def readiness(self) -> dict[str, bool]:
        checks = self.adapters.readiness()
        return {name: await check() for name, check in checks.items()}

    def tick(self) -> SchedulerTick:
        s = self.settings
        return SchedulerTick(
            self.adapters.jobs(), self.adapters.schedules(), self.adapters.dispatcher(),
            self.use_cases.clock(),
            TickSettings(dispatch_timeout=timedelta(seconds=s.dispatch_timeout_seconds), retention=s.retention))

    def scheduler_loop(self) -> SchedulerLoop:
        return SchedulerLoop(self.tick(), self.adapters.jobs(), self.adapters.schedules(), self.adapters.wakeup(),
                             self.use_cases.clock())

    def worker(self, *, queues: tuple[str, ...], concurrency: int, worker_id: str) -> Worker:
        s = self.settings
        settings = WorkerSettings(worker_id=worker_id, queues=queues, concurrency=concurrency,
                                  lease_seconds=s.lease_seconds, heartbeat_seconds=s.heartbeat_seconds,
                                  shutdown_grace_seconds=s.shutdown_grace_seconds)
        return Worker(self.adapters.jobs(), self.adapters.dispatcher(), self.adapters.tasks(),
                      self.use_cases.clock(), settings)


def task_registry(settings: Settings) -> ImportedTaskRegistry:
    return ImportedTaskRegistry(settings.tasks, builtin_tasks(settings.http_allow, settings.http_allow_private))


def build(settings: Settings) -> Runtime:
    """Choose the adapters: memory unless a database URL is given (SPEC §7)."""
    tasks = task_registry(settings)
    if settings.backend == "memory" and settings.redis_url is None:
        adapters = MemoryAdapters(tasks=providers.Object(tasks))
        return Runtime(settings, adapters)
    raise NotImplementedError("PostgreSQL/Redis wiring lands with their adapters")
