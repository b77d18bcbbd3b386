"""/ui/schedules: the schedules, one schedule (rule, zone, next fire times, recent jobs, occurrence ledger),
pause, resume, trigger, and delete after a confirmation page. Links use the id: a name may hold a '/'."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from adapters.http.paging import decode_cursor, encode_cursor
from adapters.http.ui.render import page, redirect
from application.manage_jobs import ListJobs
from application.manage_schedules import (
    DeleteSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    PreviewSchedule,
    ResumeSchedule,
    ScheduleOccurrences,
    TriggerSchedule,
)
from application.ports import JobFilter

PAGE_SIZE: Final = 50
NEXT_FIRES: Final = 10
RECENT: Final = 10
LEDGER: Final = 20


class SchedulePages(Controller):
    path = "/schedules"

    @get("/")
    async def schedules(self, request: Request[Any, Any, Any], list_schedules: NamedDependency[ListSchedules],
                        now: NamedDependency[datetime]) -> Template:
        cursor = request.query_params.get("cursor") or None
        found = await list_schedules(limit=PAGE_SIZE, cursor=decode_cursor(cursor))
        return page(request, "schedules.html", now=now, schedules=found.items, cursor=cursor,
                    next_cursor=encode_cursor(found.next_cursor))

    @get("/{key:str}")
    async def schedule(self, request: Request[Any, Any, Any], key: FromPath[str], now: NamedDependency[datetime],
                       preview_schedule: NamedDependency[PreviewSchedule], list_jobs: NamedDependency[ListJobs],
                       schedule_occurrences: NamedDependency[ScheduleOccurrences]) -> Template:
        schedule, fires = await preview_schedule(key, NEXT_FIRES)
        recent = await list_jobs(JobFilter(schedule_id=schedule.id), limit=RECENT, cursor=None)
        ledger = await schedule_occurrences(schedule.id, limit=LEDGER, cursor=None)
        return page(request, "schedule.html", now=now, schedule=schedule, fires=fires, recent=recent.items,
                    ledger=ledger.items)

    @post("/{key:str}/pause")
    async def pause(self, request: Request[Any, Any, Any], key: FromPath[str],
                    pause_schedule: NamedDependency[PauseSchedule]) -> Redirect:
        note = str((await request.form()).get("note") or "").strip()[:500] or None
        schedule = await pause_schedule(key, note=note)
        return redirect(request, f"/ui/schedules/{schedule.id}", f"Schedule {schedule.name!r} paused.")

    @post("/{key:str}/resume")
    async def resume(self, request: Request[Any, Any, Any], key: FromPath[str],
                     resume_schedule: NamedDependency[ResumeSchedule]) -> Redirect:
        schedule = await resume_schedule(key)
        return redirect(request, f"/ui/schedules/{schedule.id}", f"Schedule {schedule.name!r} resumed.")

    @post("/{key:str}/trigger")
    async def trigger(self, request: Request[Any, Any, Any], key: FromPath[str],
                      trigger_schedule: NamedDependency[TriggerSchedule]) -> Redirect:
        job = await trigger_schedule(key)
        return redirect(request, f"/ui/schedules/{job.schedule_id}", f"Fired job {job.id} now.")

    @get("/{key:str}/delete")
    async def confirm_delete(self, request: Request[Any, Any, Any], key: FromPath[str],
                             get_schedule: NamedDependency[GetSchedule]) -> Template:
        """The confirmation step: deleting needs a second, deliberate press."""
        return page(request, "delete.html", schedule=await get_schedule(key))

    @post("/{key:str}/delete")
    async def delete(self, request: Request[Any, Any, Any], key: FromPath[str],
                     get_schedule: NamedDependency[GetSchedule],
                     delete_schedule: NamedDependency[DeleteSchedule]) -> Redirect:
        schedule = await get_schedule(key)
        await delete_schedule(schedule.id)
        return redirect(request, "/ui/schedules", f"Schedule {schedule.name!r} deleted; the jobs it fired stay.")
