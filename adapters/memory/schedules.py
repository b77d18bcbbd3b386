"""In-memory ScheduleRepository, sharing the job store so a firing is recorded atomically."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from attrs import evolve

from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.paging import keyset_page
from application.ports import Finished, Fired, Page, Planner
from domain.errors import DomainError, DuplicateSchedule, ScheduleNotFound, StaleWrite
from domain.schedule import Fate, Firing, Occurrence, Schedule

log = logging.getLogger("gnomon.memory")


class InMemoryScheduleRepository:
    def __init__(self, jobs: InMemoryJobRepository) -> None:
        self.jobs = jobs
        self.rows: dict[str, Schedule] = {}
        self.ledger: dict[str, list[Occurrence]] = defaultdict(list)

    async def add(self, schedule: Schedule) -> None:
        if any(s.name == schedule.name for s in self.rows.values()):
            raise DuplicateSchedule(schedule.name)
        self.rows[schedule.id] = schedule

    async def get(self, key: str) -> Schedule:
        found = self.rows.get(key) or next((s for s in self.rows.values() if s.name == key), None)
        if found is None:
            raise ScheduleNotFound(key)
        return found

    async def list(self, *, limit: int, cursor: str | None) -> Page[Schedule]:
        return keyset_page(self.rows.values(), lambda s: s.id, limit=limit, cursor=cursor)

    async def save(self, schedule: Schedule) -> None:
        self._check(schedule)
        self.rows[schedule.id] = schedule

    def _check(self, schedule: Schedule) -> None:
        stored = self.rows.get(schedule.id)
        if stored is None:
            raise ScheduleNotFound(schedule.id)
        if stored.version != schedule.version - 1:
            raise StaleWrite(f"schedule {schedule.id}")
        if any(s.name == schedule.name and s.id != schedule.id for s in self.rows.values()):
            raise DuplicateSchedule(schedule.name)

    async def delete(self, schedule_id: str) -> None:
        schedule = await self.get(schedule_id)
        del self.rows[schedule.id]
        self.ledger.pop(schedule.id, None)

    async def record(self, firing: Firing) -> Fired:
        return self._record(firing, firing.schedule.updated_at)

    def _record(self, firing: Firing, now: datetime) -> Fired:
        self._check(firing.schedule)
        # Displaced jobs are cancelled before the new ones are gated (as in PostgreSQL): a new job of the cancelled
        # one's key is not held behind it, and held jobs of its key and queue are woken.
        cancelled = self._cancel(firing.cancel_job_ids, now)
        woken = self.jobs.freed([change.job for change in cancelled], now)
        stored = [s.job for s in self.jobs.add_now(firing.jobs, skip_fired=True)]
        # A job skipped because its occurrence has one already: the ledger keeps no entry for it, and the
        # schedule's last job is the one that holds the occurrence (as the PostgreSQL adapter does).
        kept = {j.id for j in stored}  # by id: a stored job may be held (adapters/memory/flow.py), not equal
        replaced = {j.id: self.jobs.holder_of(j) for j in firing.jobs if j.id not in kept}
        schedule = firing.schedule
        if schedule.last_job_id in replaced:
            schedule = evolve(schedule, last_job_id=replaced[schedule.last_job_id])
        self.rows[schedule.id] = schedule
        self.ledger[schedule.id].extend(e for e in firing.occurrences if e.job_id not in replaced)
        return Fired(jobs=stored, cancelled=cancelled, woken=woken)

    def _cancel(self, job_ids: Iterable[str], now: datetime) -> list[Finished]:
        cancelled = []
        for job_id in job_ids:
            job = self.jobs.rows.get(job_id)
            if job is not None and not job.terminal:
                done, run = job.cancel(now=now)
                self.jobs.save_now(done, run)
                cancelled.append(Finished(job=done, run=run))
        return cancelled

    async def fire_due(self, now: datetime, limit: int, plan: Planner) -> Fired:
        due = sorted((s for s in self.rows.values() if s.due_at is not None and s.due_at <= now),
                     key=lambda s: s.due_at or now)[:limit]
        fired = Fired(jobs=[])
        for schedule in due:
            previous = self.jobs.rows.get(schedule.last_job_id) if schedule.last_job_id else None
            try:
                firing = plan(schedule, previous)
            except DomainError as exc:  # one broken schedule must not stop the others
                log.error("schedule %s could not be planned: %s", schedule.id, exc)
                continue
            recorded = self._record(firing, now)
            fired = Fired(jobs=fired.jobs + recorded.jobs, cancelled=fired.cancelled + recorded.cancelled,
                          woken=fired.woken + recorded.woken)
        return fired

    async def next_due_at(self) -> datetime | None:
        return min((s.due_at for s in self.rows.values() if s.due_at is not None), default=None)

    async def occurrences(self, schedule_id: str, *, limit: int, cursor: str | None) -> Page[Occurrence]:
        entries = list(enumerate(self.ledger.get(schedule_id, [])))
        page = keyset_page(entries, lambda e: f"{e[0]:012d}", limit=limit, cursor=cursor)
        return Page(items=[e[1] for e in page.items], next_cursor=page.next_cursor)

    async def fired_for(self, schedule_id: str, start: datetime, end: datetime) -> set[datetime]:
        in_ledger = {e.scheduled_for for e in self.ledger.get(schedule_id, []) if e.fate is Fate.FIRED}
        in_jobs = {at for (sid, at) in self.jobs.occurrences() if sid == schedule_id}
        return {at for at in in_ledger | in_jobs if start <= at <= end}
