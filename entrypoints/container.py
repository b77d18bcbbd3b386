"""The composition root: the only place that decides which adapters are real."""

from __future__ import annotations

from dependency_injector import containers, providers

from adapters.memory.clock import SystemClock
from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.schedules import InMemoryScheduleRepository
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
from application.submit_jobs import SubmitJobs


class MemoryAdapters(containers.DeclarativeContainer):
    """Everything in this process: for tests and `gnomon dev`."""

    tasks = providers.Dependency()
    jobs = providers.Singleton(InMemoryJobRepository)
    schedules = providers.Singleton(InMemoryScheduleRepository, jobs=jobs)
    dispatcher = providers.Dependency()
    wakeup = providers.Dependency()


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
