"""ScheduleRepository on PostgreSQL. A firing (new jobs, ledger entries, the schedule's new state and the
cancellations it asks for) is written in one transaction; `fire_due` handles a whole batch of due schedules,
row-locked with SKIP LOCKED so that each is fired by exactly one scheduler replica."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from attrs import define, evolve
from psycopg import errors
from psycopg.rows import DictRow
from psycopg.types.json import Json

from adapters.postgres import flow, flow_sql, sql
from adapters.postgres.job_repository import write_jobs
from adapters.postgres.pool import Pool, connection, transaction
from adapters.postgres.rows import (
    _job_from_row,
    _occurrence_from_row,
    _schedule_from_row,
    as_uuid,
    cursor_uuid,
    job_record,
    occurrence_record,
    schedule_record,
)
from application.ports import Finished, Fired, Page, Planner
from domain.errors import Conflict, DomainError, DuplicateSchedule, InvalidInput, ScheduleNotFound, StaleWrite
from domain.job import Job
from domain.schedule import Firing, Occurrence, Schedule

log = logging.getLogger("gnomon.postgres")
Connection = psycopg.AsyncConnection[DictRow]


@define
class PgScheduleRepository:
    _pool: Pool

    async def add(self, schedule: Schedule) -> None:
        async with connection(self._pool) as conn:
            try:
                await conn.execute(sql.INSERT_SCHEDULE, {"schedule": Json(schedule_record(schedule))})
            except errors.UniqueViolation as exc:
                raise _duplicate(exc, schedule) from exc

    async def get(self, key: str) -> Schedule:
        async with connection(self._pool) as conn:
            row = await _find(conn, key)
        if row is None:
            raise ScheduleNotFound(key)
        return _schedule_from_row(row)

    async def list(self, *, limit: int, cursor: str | None) -> Page[Schedule]:
        after = cursor_uuid(cursor)
        query = sql.LIST_SCHEDULES if after is None else sql.LIST_SCHEDULES_AFTER
        async with connection(self._pool) as conn:
            rows = await (await conn.execute(query, {"cursor": after, "limit": limit + 1})).fetchall()
        items = [_schedule_from_row(row) for row in rows[:limit]]
        return Page(items=items, next_cursor=items[-1].id if len(rows) > limit and items else None)

    async def save(self, schedule: Schedule) -> None:
        async with transaction(self._pool) as conn:
            await _save(conn, [schedule])

    async def delete(self, schedule_id: str) -> None:
        if (key := as_uuid(schedule_id)) is None:
            raise ScheduleNotFound(schedule_id)
        async with connection(self._pool) as conn:
            cur = await conn.execute(sql.DELETE_SCHEDULE, {"id": key})
        if cur.rowcount == 0:
            raise ScheduleNotFound(schedule_id)

    async def record(self, firing: Firing) -> Fired:
        async with transaction(self._pool) as conn:
            await conn.execute(sql.LOCK_SCHEDULE, {"id": firing.schedule.id})
            return await _persist(conn, [firing], now=firing.schedule.updated_at)

    async def fire_due(self, now: datetime, limit: int, plan: Planner) -> Fired:
        async with transaction(self._pool) as conn:
            rows = await (await conn.execute(sql.LOCK_DUE_SCHEDULES, {"now": now, "limit": limit})).fetchall()
            due = [_schedule_from_row(row) for row in rows]
            previous = await _jobs(conn, [s.last_job_id for s in due if s.last_job_id])
            firings = [f for s in due if (f := _plan(plan, s, previous.get(s.last_job_id or ""))) is not None]
            return await _persist(conn, firings, now=now)

    async def next_due_at(self) -> datetime | None:
        async with connection(self._pool) as conn:
            row = await (await conn.execute(sql.NEXT_SCHEDULE_DUE_AT)).fetchone()
        return None if row is None or row["due"] is None else _schedule_time(row["due"])

    async def occurrences(self, schedule_id: str, *, limit: int, cursor: str | None) -> Page[Occurrence]:
        after = _ledger_cursor(cursor)
        key = as_uuid(schedule_id)
        if key is None:
            return Page(items=[], next_cursor=None)
        query = sql.OCCURRENCES if after is None else sql.OCCURRENCES_AFTER
        async with connection(self._pool) as conn:
            params = {"schedule_id": key, "cursor": after, "limit": limit + 1}
            rows = await (await conn.execute(query, params)).fetchall()
        items = [_occurrence_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit and items
        return Page(items=items, next_cursor=str(rows[limit - 1]["id"]) if more else None)

    async def fired_for(self, schedule_id: str, start: datetime, end: datetime) -> set[datetime]:
        if (key := as_uuid(schedule_id)) is None:
            return set()
        async with connection(self._pool) as conn:
            params = {"schedule_id": key, "start": start, "end": end}
            rows = await (await conn.execute(sql.FIRED_FOR, params)).fetchall()
        return {_schedule_time(row["scheduled_for"]) for row in rows}


def _schedule_time(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _plan(plan: Planner, schedule: Schedule, previous: Job | None) -> Firing | None:
    """The schedule's firing; None when nothing changed or the schedule cannot be planned (logged), so that
    one broken schedule does not hold up the others."""
    try:
        firing = plan(schedule, previous)
    except DomainError:
        log.exception("schedule %s (%s) could not be planned; skipped this tick", schedule.name, schedule.id)
        return None
    return None if firing.schedule.version == schedule.version else firing


async def _find(conn: Connection, key: str) -> dict[str, Any] | None:
    as_id = as_uuid(key)
    if as_id is None:
        return await (await conn.execute(sql.SCHEDULE_BY_NAME, {"name": key})).fetchone()
    return await (await conn.execute(sql.SCHEDULE_BY_ID_OR_NAME, {"id": as_id, "name": key})).fetchone()


async def _jobs(conn: Connection, job_ids: list[str]) -> dict[str, Job]:
    ids = [key for job_id in job_ids if (key := as_uuid(job_id)) is not None]
    if not ids:
        return {}
    rows = await (await conn.execute(sql.JOBS_BY_IDS, {"ids": ids})).fetchall()
    return {str(row["id"]): _job_from_row(row) for row in rows}


async def _save(conn: Connection, schedules: Sequence[Schedule]) -> None:
    """Compare-and-set the schedules; StaleWrite (or ScheduleNotFound) unless every one was written."""
    if not schedules:
        return
    try:
        cur = await conn.execute(sql.SAVE_SCHEDULES, {"schedules": Json([schedule_record(s) for s in schedules])})
    except errors.UniqueViolation as exc:
        raise _duplicate(exc, *schedules) from exc
    written = {str(row["id"]) for row in await cur.fetchall()}
    for schedule in schedules:
        if schedule.id not in written:
            exists = await (await conn.execute(sql.SCHEDULE_EXISTS, {"id": schedule.id})).fetchone()
            raise StaleWrite(f"schedule {schedule.id}") if exists else ScheduleNotFound(schedule.id)


async def _persist(conn: Connection, firings: Sequence[Firing], *, now: datetime) -> Fired:
    """Record firings inside the caller's transaction. The jobs they displace (cancel_other) are cancelled first,
    so that the new jobs are gated against what still runs: a new job of the cancelled one's key is not held."""
    new = [job for firing in firings for job in firing.jobs]
    cancelled, woken = await _cancel(conn, [job_id for f in firings for job_id in f.cancel_job_ids], new, now)
    jobs = await flow.gate_new(conn, new, now)
    stored: set[str] = set()
    if jobs:
        try:
            cur = await conn.execute(sql.INSERT_FIRED_JOBS, {"jobs": Json([job_record(j) for j in jobs])})
        except errors.ForeignKeyViolation as exc:  # the schedule was deleted meanwhile
            raise ScheduleNotFound(str(jobs[0].schedule_id)) from exc
        stored = {str(row["id"]) for row in await cur.fetchall()}
    # A job skipped because its occurrence has one already: the earlier firing recorded it in the ledger.
    replaced = await _holders(conn, [j for j in jobs if j.id not in stored])
    await _save(conn, [_repoint(f.schedule, replaced) for f in firings])
    entries = [e for f in firings for e in f.occurrences if e.job_id is None or e.job_id not in replaced]
    if entries:
        await conn.execute(sql.INSERT_OCCURRENCES, {"entries": Json([occurrence_record(e) for e in entries])})
    return Fired(jobs=[job for job in jobs if job.id in stored], cancelled=cancelled, woken=woken)


async def _holders(conn: Connection, skipped: list[Job]) -> dict[str, str]:
    """For jobs skipped as duplicates of their occurrence: skipped job id -> id of the job that holds it."""
    by_occurrence = {(j.schedule_id, j.scheduled_for): j.id for j in skipped}
    found: dict[str, str] = {}
    for schedule_id in {j.schedule_id for j in skipped}:
        times = [j.scheduled_for for j in skipped if j.schedule_id == schedule_id]
        params = {"schedule_id": schedule_id, "times": times}
        for row in await (await conn.execute(sql.JOBS_OF_OCCURRENCES, params)).fetchall():
            key = (schedule_id, _schedule_time(row["scheduled_for"]))
            if key in by_occurrence:
                found[by_occurrence[key]] = str(row["id"])
    return found


def _repoint(schedule: Schedule, replaced: dict[str, str]) -> Schedule:
    if schedule.last_job_id in replaced:
        return evolve(schedule, last_job_id=replaced[schedule.last_job_id])
    return schedule


async def _cancel(conn: Connection, job_ids: list[str], new: Sequence[Job],
                  now: datetime) -> tuple[list[Finished], list[Job]]:
    """Cancel the jobs firings displace (cancel_other), closing their running attempts, and wake the held jobs of
    their keys and limiting queues; the cancels written, and the jobs woken.

    As any cancel, it locks before it writes (the job may be one a claim is deciding on), and the lock comes before
    the row lock. The locks are taken exclusively, as a holder's, and with them the keys of the `new` jobs that gating
    locks next: this transaction wakes, then holds, and a shared lock it upgraded later could deadlock with another
    such transaction. One statement, sorted, as every flow lock (adapters/postgres/flow_sql.py)."""
    ids = [key for job_id in job_ids if (key := as_uuid(job_id)) is not None]
    if not ids:
        return [], []
    seen = [_job_from_row(row) for row in await (await conn.execute(sql.JOBS_BY_IDS, {"ids": ids})).fetchall()]
    live = [job for job in seen if not job.terminal]
    keys = {job.concurrency_key for job in live if job.concurrency_key is not None}
    queues = await flow.limiting(conn, {job.queue for job in live})
    # The new jobs' keys even when the cancelled jobs have none (a schedule given a key since): gating locks them
    # next, and a claim of both jobs locks the key before the row, so the row lock must not come first.
    holding = keys | {job.concurrency_key for job in new if job.concurrency_key is not None}
    if holding or queues:
        await conn.execute(flow_sql.LOCK_FOR_HOLDING, {"keys": sorted(holding), "queues": sorted(queues)})
    wanted = {job.id for job in live}
    params = {"ids": [key for key in ids if str(key) in wanted]}
    rows = await (await conn.execute(sql.JOBS_BY_IDS_FOR_UPDATE, params)).fetchall()
    outcomes = [_cancelled(job, now) for job in map(_job_from_row, rows) if not job.terminal]
    if not outcomes:
        return [], []
    await write_jobs(conn, sql.SAVE_JOBS, outcomes, {})
    return outcomes, await flow.wake(conn, now, keys=keys, queues=queues)


def _cancelled(job: Job, now: datetime) -> Finished:
    cancelled, run = job.cancel(now=now)
    return Finished(job=cancelled, run=run)


def _ledger_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise InvalidInput({"cursor": "not a cursor this listing handed out"})
    return int(cursor)


def _duplicate(exc: errors.UniqueViolation, *schedules: Schedule) -> Conflict:
    if exc.diag.constraint_name == "schedules_name_key":
        names = [s.name for s in schedules]
        clash = next((n for n in names if n in (exc.diag.message_detail or "")), names[0])
        return DuplicateSchedule(clash)
    return Conflict(f"schedule already stored: {exc.diag.message_detail or exc}")
