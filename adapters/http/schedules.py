"""/v1/schedules: create, read, list, update, delete, pause, resume, trigger, preview, ledger, backfill.

`{key}` is the schedule's id or its name.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from adapters.http.bodies import BackfillBody, PauseBody, ScheduleBody, SchedulePatch, instant, utc
from adapters.http.paging import Cursor, Limit, decode_cursor, encode_cursor
from adapters.http.problems import READS, WRITES
from adapters.http.views import FireTime, JobIds, JobView, OccurrencePage, OccurrenceView, SchedulePage, ScheduleView
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

Count = Annotated[int, QueryParameter(ge=1, le=1000, description="how many fire times, 1 to 1000")]


class SchedulesController(Controller):
    path = "/schedules"
    tags = ["schedules"]

    @post("/", status_code=201, responses=WRITES)
    async def create(self, data: JSONBody[ScheduleBody],
                     create_schedule: NamedDependency[CreateSchedule]) -> ScheduleView:
        """Create a schedule; 409 if the name is taken."""
        return ScheduleView.of(await create_schedule(data.to_spec()))

    @get("/", responses=READS)
    async def list_schedules(self, list_schedules: NamedDependency[ListSchedules], limit: Limit = 100,
                             cursor: Cursor = None) -> SchedulePage:
        page = await list_schedules(limit=limit, cursor=decode_cursor(cursor))
        return SchedulePage(items=[ScheduleView.of(s) for s in page.items],
                            next_cursor=encode_cursor(page.next_cursor))

    @get("/{key:str}", responses=READS)
    async def get_schedule(self, key: FromPath[str], get_schedule: NamedDependency[GetSchedule]) -> ScheduleView:
        return ScheduleView.of(await get_schedule(key))

    @patch("/{key:str}", responses=WRITES)
    async def update(self, key: FromPath[str], data: JSONBody[SchedulePatch],
                     update_schedule: NamedDependency[UpdateSchedule]) -> ScheduleView:
        """Change any fields; `job` fields merge into the template; next_fire_at is recomputed."""
        return ScheduleView.of(await update_schedule(key, data.changes()))

    @delete("/{key:str}", status_code=204, responses=WRITES)
    async def remove(self, key: FromPath[str], delete_schedule: NamedDependency[DeleteSchedule]) -> None:
        """Delete the schedule; the jobs it fired stay."""
        await delete_schedule(key)

    @post("/{key:str}/pause", status_code=200, responses=WRITES)
    async def pause(self, key: FromPath[str], pause_schedule: NamedDependency[PauseSchedule],
                    data: JSONBody[PauseBody | None] = None) -> ScheduleView:
        """Pause, with an optional note and an `until` for automatic resume."""
        body = data or PauseBody()
        return ScheduleView.of(await pause_schedule(key, note=body.note, until=utc(body.until, "until")))

    @post("/{key:str}/resume", status_code=200, responses=WRITES)
    async def resume(self, key: FromPath[str], resume_schedule: NamedDependency[ResumeSchedule]) -> ScheduleView:
        """Resume; occurrences missed while paused follow the misfire policy."""
        return ScheduleView.of(await resume_schedule(key))

    @post("/{key:str}/trigger", status_code=201, responses=WRITES)
    async def trigger(self, key: FromPath[str], trigger_schedule: NamedDependency[TriggerSchedule]) -> JobView:
        """Fire one job now, outside the rule."""
        return JobView.of(await trigger_schedule(key))

    @get("/{key:str}/preview", responses=READS)
    async def preview(self, key: FromPath[str], preview_schedule: NamedDependency[PreviewSchedule],
                      count: Count = 10) -> list[FireTime]:
        """The next fire times, in UTC and on the schedule's wall clock."""
        schedule, times = await preview_schedule(key, count)
        return [FireTime(utc=t.astimezone(UTC), local=t.astimezone(schedule.tz)) for t in times]

    @get("/{key:str}/occurrences", responses=READS)
    async def occurrences(self, key: FromPath[str], schedule_occurrences: NamedDependency[ScheduleOccurrences],
                          limit: Limit = 100, cursor: Cursor = None) -> OccurrencePage:
        """The occurrence ledger: the fate of every occurrence, newest first."""
        page = await schedule_occurrences(key, limit=limit, cursor=decode_cursor(cursor))
        return OccurrencePage(items=[OccurrenceView.of(o) for o in page.items],
                              next_cursor=encode_cursor(page.next_cursor))

    @post("/{key:str}/backfill", status_code=200, responses=WRITES)
    async def backfill(self, key: FromPath[str], data: JSONBody[BackfillBody],
                       backfill_schedule: NamedDependency[BackfillSchedule]) -> JobIds:
        """Fire the occurrences in [start, end] that have no job yet."""
        start, end = instant(data.start, "start"), instant(data.end, "end")
        return JobIds(ids=[j.id for j in await backfill_schedule(key, start=start, end=end)])
