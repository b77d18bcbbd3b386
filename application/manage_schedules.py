"""Schedule use cases: create, update, delete, pause, resume, trigger, preview, ledger, backfill."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from attrs import evolve, frozen

from application.identity import new_id
from application.manage_jobs import after_cancels
from application.ports import (
    NO_METRICS,
    Cancellations,
    Clock,
    Dispatcher,
    JobRepository,
    Metrics,
    Page,
    ScheduleRepository,
    TaskRegistry,
    Wakeup,
)
from application.submit_jobs import dispatch
from domain.errors import InvalidInput, JobNotFound, UnknownTask
from domain.job import Job, State
from domain.schedule import Firing, Occurrence, Schedule, ScheduleSpec

MAX_PREVIEW: Final = 1000


def _check_task(tasks: TaskRegistry, spec: ScheduleSpec) -> None:
    known = tasks.names()
    if known is not None and spec.job.task not in known:
        raise UnknownTask("job.task", spec.job.task)


@frozen
class CreateSchedule:
    schedules: ScheduleRepository
    clock: Clock
    tasks: TaskRegistry
    wakeup: Wakeup

    async def __call__(self, spec: ScheduleSpec) -> Schedule:
        now = self.clock.now()
        schedule = Schedule.create(new_id(now), spec, now=now)
        _check_task(self.tasks, spec)
        await self.schedules.add(schedule)
        await self.wakeup.notify()
        return schedule


@frozen
class UpdateSchedule:
    schedules: ScheduleRepository
    clock: Clock
    tasks: TaskRegistry
    wakeup: Wakeup

    async def __call__(self, key: str, changes: dict[str, Any]) -> Schedule:
        """Apply the given fields of the spec; `job` changes merge into the job template."""
        schedule = await self.schedules.get(key)
        if "job" in changes:
            changes = {**changes, "job": evolve(schedule.spec.job, **changes["job"])}
        try:
            spec = evolve(schedule.spec, **changes)
        except (TypeError, ValueError) as exc:
            raise InvalidInput({"body": str(exc)}) from exc
        _check_task(self.tasks, spec)
        revised = schedule.revise(spec, now=self.clock.now())
        await self.schedules.save(revised)
        await self.wakeup.notify()
        return revised


@frozen
class DeleteSchedule:
    schedules: ScheduleRepository

    async def __call__(self, key: str) -> None:
        await self.schedules.delete((await self.schedules.get(key)).id)


@frozen
class PauseSchedule:
    schedules: ScheduleRepository
    clock: Clock

    async def __call__(self, key: str, *, note: str | None = None, until: datetime | None = None) -> Schedule:
        paused = (await self.schedules.get(key)).pause(now=self.clock.now(), note=note, until=until)
        await self.schedules.save(paused)
        return paused


@frozen
class _Firer:
    """Records a firing and dispatches the jobs that are due now; the jobs a cancel_other cancelled are dealt with
    as any cancel (their workers told, held jobs they woke dispatched)."""

    schedules: ScheduleRepository
    jobs: JobRepository
    dispatcher: Dispatcher
    clock: Clock
    cancellations: Cancellations | None = None
    metrics: Metrics = NO_METRICS

    async def _fire(self, firing: Firing) -> list[Job]:
        fired = await self.schedules.record(firing)
        await dispatch(self.dispatcher, [j for j in fired.jobs if j.state is State.QUEUED])
        await after_cancels(fired.cancelled, fired.woken, dispatcher=self.dispatcher,
                            cancellations=self.cancellations, metrics=self.metrics)
        return fired.jobs

    async def _previous(self, schedule: Schedule) -> Job | None:
        if schedule.last_job_id is None:
            return None
        try:
            return await self.jobs.get(schedule.last_job_id)
        except JobNotFound:
            return None


@frozen
class ResumeSchedule(_Firer):
    async def __call__(self, key: str) -> Schedule:
        schedule = await self.schedules.get(key)
        firing = schedule.resume(now=self.clock.now(), previous=await self._previous(schedule), new_id=new_id)
        await self._fire(firing)
        return firing.schedule


@frozen
class TriggerSchedule(_Firer):
    async def __call__(self, key: str) -> Job:
        firing = (await self.schedules.get(key)).trigger(now=self.clock.now(), new_id=new_id)
        return (await self._fire(firing))[0]


@frozen
class BackfillSchedule(_Firer):
    async def __call__(self, key: str, *, start: datetime, end: datetime) -> list[Job]:
        schedule = await self.schedules.get(key)
        already = await self.schedules.fired_for(schedule.id, start, end)
        firing = schedule.backfill(start=start, end=end, already=already, now=self.clock.now(), new_id=new_id)
        return await self._fire(firing)


@frozen
class PreviewSchedule:
    schedules: ScheduleRepository
    clock: Clock

    async def __call__(self, key: str, count: int) -> tuple[Schedule, list[datetime]]:
        if not 1 <= count <= MAX_PREVIEW:
            raise InvalidInput({"count": f"must be between 1 and {MAX_PREVIEW}"})
        schedule = await self.schedules.get(key)
        return schedule, schedule.preview(count, after=self.clock.now())


@frozen
class GetSchedule:
    schedules: ScheduleRepository

    async def __call__(self, key: str) -> Schedule:
        return await self.schedules.get(key)


@frozen
class ListSchedules:
    schedules: ScheduleRepository

    async def __call__(self, *, limit: int, cursor: str | None) -> Page[Schedule]:
        return await self.schedules.list(limit=limit, cursor=cursor)


@frozen
class ScheduleOccurrences:
    schedules: ScheduleRepository

    async def __call__(self, key: str, *, limit: int, cursor: str | None) -> Page[Occurrence]:
        schedule = await self.schedules.get(key)
        return await self.schedules.occurrences(schedule.id, limit=limit, cursor=cursor)
