"""JobRepository on PostgreSQL: one statement per batch on the hot paths, fenced and compare-and-set writes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
from attrs import define, evolve, field
from psycopg import errors
from psycopg import sql as compose
from psycopg.rows import DictRow, tuple_row
from psycopg.types.json import Json

from adapters.postgres import flow, flow_sql, sql
from adapters.postgres.pool import Pool, connection, transaction
from adapters.postgres.rows import (
    _job_from_row,
    _run_from_row,
    as_uuid,
    claimed_jobs,
    cursor_uuid,
    job_copy_rows,
    job_record,
    outcomes_json,
    run_record,
    uuid_array,
    uuid_texts,
)
from application.ports import (
    IN_FLIGHT,
    Finished,
    JobFilter,
    Page,
    Promoted,
    QueueStats,
    Recorded,
    Submitted,
    Throughput,
)
from domain.errors import Conflict, InvalidInput, JobNotFound, StaleWrite
from domain.job import Hold, Job, Run, State

Connection = psycopg.AsyncConnection[DictRow]


@define
class PgJobRepository:
    _pool: Pool
    # A hint, never a rule: this process's last claim started keyed jobs, so the next one goes straight to the gated
    # claim (which handles any job) instead of trying the one-statement claim first and finding nothing to start.
    _keyed: bool = field(default=False, init=False)

    async def add(self, jobs: Sequence[Job]) -> list[Submitted]:
        if not jobs:
            return []
        async with transaction(self._pool) as conn:
            jobs = await flow.gate_new(conn, jobs, max(j.updated_at for j in jobs))
            try:
                created = await _insert(conn, jobs)
            except errors.UniqueViolation as exc:
                raise _conflict(exc) from exc
            except errors.ForeignKeyViolation as exc:
                raise InvalidInput({"schedule_id": "no such schedule"}) from exc
            except (psycopg.DataError, errors.CheckViolation) as exc:
                raise InvalidInput({"jobs": f"cannot be stored: {exc.diag.message_primary or exc}"}) from exc
            if created is None:
                return [Submitted(job=job, created=True) for job in jobs]
            keys = [j.idempotency_key for j in jobs if j.id not in created and j.idempotency_key]
            existing = await _by_keys(conn, keys)
        return [Submitted(job=job, created=True) if job.id in created else _existing(job, existing)
                for job in jobs]

    async def get(self, job_id: str) -> Job:
        if (key := as_uuid(job_id)) is None:
            raise JobNotFound(job_id)
        async with connection(self._pool) as conn:
            row = await (await conn.execute(sql.GET_JOB, {"id": key})).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job_from_row(row)

    async def list(self, where: JobFilter, *, limit: int, cursor: str | None) -> Page[Job]:
        params: dict[str, Any] = {
            "state": None if where.state is None else str(where.state), "queue": where.queue, "task": where.task,
            "schedule_id": None if where.schedule_id is None else as_uuid(where.schedule_id),
            "cursor": cursor_uuid(cursor), "limit": limit + 1,
        }
        if where.schedule_id is not None and params["schedule_id"] is None:
            return Page(items=[], next_cursor=None)  # not an id: matches nothing
        present = [compose.SQL(sql.JOB_FILTERS[_filter_name(name, value)]) for name, value in params.items()
                   if name in sql.JOB_FILTERS and value is not None]
        condition = compose.SQL(" AND ").join(present) if present else compose.SQL(sql.NO_FILTER)
        query = compose.SQL(sql.LIST_JOBS).format(where=condition)
        async with connection(self._pool) as conn:
            rows = await (await conn.execute(query, params)).fetchall()
        items = [_job_from_row(row) for row in rows[:limit]]
        return Page(items=items, next_cursor=items[-1].id if len(rows) > limit and items else None)

    async def save(self, job: Job, run: Run | None = None) -> list[Job]:
        async with transaction(self._pool) as conn:
            keys, queues = await _freeing(conn, [job])
            written = await write_jobs(conn, sql.SAVE_JOBS, [Finished(job=job, run=run)], {})
            if not written:
                exists = await (await conn.execute(sql.JOB_EXISTS, {"id": job.id})).fetchone()
                raise StaleWrite(f"job {job.id}") if exists else JobNotFound(job.id)
            await flow.bump(conn, [job] if flow.in_flight(job) else [])
            return await flow.wake(conn, job.updated_at, keys=keys, queues=queues)

    async def promote_due(self, now: datetime, limit: int) -> list[Promoted]:
        async with connection(self._pool) as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            rows = await (await cursor.execute(sql.PROMOTE_DUE, {"now": now, "limit": limit})).fetchall()
        promoted = [Promoted(id=job_id, queue=queue, priority=priority) for job_id, queue, priority, _ in rows]
        keyed = [job_id for job_id, _, _, is_keyed in rows if is_keyed]
        if not keyed:
            return promoted
        async with transaction(self._pool) as conn:
            found = await (await conn.execute(sql.JOBS_BY_IDS, {"ids": keyed})).fetchall()
            queued = [job for job in map(_job_from_row, found) if job.state is State.QUEUED]
            held = {job.id for job in await flow.gate_promoted(conn, queued, now) if job.held}
        return [evolve(p, held=True) if p.id in held else p for p in promoted]

    async def claim(self, job_ids: Sequence[str], *, worker_id: str, now: datetime, lease_seconds: float,
                    limited: Collection[str] = ()) -> list[Job]:
        ids = uuid_texts(job_ids)
        if not ids:
            return []
        params = {"ids": uuid_array(ids), "worker": worker_id, "now": now, "limited": sorted(limited),
                  "expires_at": now + timedelta(seconds=lease_seconds)}
        claimed: list[Job] = []
        left = ids
        if not limited and not self._keyed:  # nothing to count, as far as we know: the one-statement claim first
            async with connection(self._pool) as conn:
                rows = await (await conn.cursor(row_factory=tuple_row).execute(sql.CLAIM, params)).fetchall()
            claimed = claimed_jobs(rows, worker_id=worker_id, now=now, expires_at=params["expires_at"])
            # Ids left over: stale or duplicates (usually), or jobs flow control counts (keyed, held, limited queue).
            started = {job.id for job in claimed}
            left = [key for key in ids if key not in started]
        if left:  # the gated claim handles any job; it is what a batch of keyed jobs needs at once
            async with connection(self._pool) as conn:
                gated = await flow.claim_gated(conn, uuid_array(left), params, limited)
            if gated:  # all held or stale tells nothing: keep the hint as it was
                self._keyed = any(job.concurrency_key is not None for job in gated)
            claimed += gated
        order = {key: i for i, key in enumerate(ids)}
        return sorted(claimed, key=lambda j: order[j.id])

    async def adopt(self, job_ids: Sequence[str], *, worker_id: str, now: datetime) -> list[Job]:
        ids = uuid_texts(job_ids)
        if not ids:
            return []
        params = {"ids": uuid_array(ids), "worker": worker_id, "now": now}
        async with connection(self._pool) as conn:
            return [_job_from_row(row) for row in await (await conn.execute(sql.ADOPT, params)).fetchall()]

    async def renew(self, leases: Sequence[tuple[str, int]], *, now: datetime,
                    lease_seconds: float) -> list[str]:
        held = [(key, token) for job_id, token in leases if (key := as_uuid(job_id)) is not None]
        params = {"ids": [key for key, _ in held], "tokens": [token for _, token in held], "now": now,
                  "expires_at": now + timedelta(seconds=lease_seconds)}
        renewed: set[str] = set()
        if held:
            async with connection(self._pool) as conn:
                renewed = {str(row["id"]) for row in await (await conn.execute(sql.RENEW, params)).fetchall()}
        return [job_id for job_id, _ in leases if str(as_uuid(job_id)) not in renewed]

    async def finish(self, outcomes: Sequence[Finished], *, now: datetime,
                     limited: Collection[str] = ()) -> Recorded:
        if not outcomes:
            return Recorded(refused=[], woken=[])
        keys = {item.job.concurrency_key for item in outcomes if item.job.concurrency_key is not None}
        queues = {item.job.queue for item in outcomes if item.job.queue in limited}
        woken: list[Job] = []
        params = {"ids": uuid_array(item.job.id for item in outcomes), "jobs": outcomes_json(outcomes), "now": now}
        if keys or queues:  # slots of keys or limited queues free: wake their held jobs in the same transaction
            async with connection(self._pool) as conn:
                rows, woken = await flow.write_and_wake(conn, sql.FINISH_JOBS, params, now, keys, queues)
        else:  # one statement, so one transaction of its own: no BEGIN and COMMIT round trips around it
            async with connection(self._pool) as conn:
                rows = await (await conn.execute(sql.FINISH_JOBS, params)).fetchall()
        written = {str(row["id"]) for row in rows}
        return Recorded(refused=[item.job.id for item in outcomes if item.job.id not in written], woken=woken)

    async def expired(self, now: datetime, limit: int) -> list[Job]:
        async with connection(self._pool) as conn:
            rows = await (await conn.execute(sql.EXPIRED, {"now": now, "limit": limit})).fetchall()
        return [_job_from_row(row) for row in rows]

    async def redispatch(self, now: datetime, older_than: datetime, limit: int) -> list[Job]:
        params = {"now": now, "older_than": older_than, "limit": limit}
        async with connection(self._pool) as conn:
            rows = await (await conn.execute(sql.REDISPATCH, params)).fetchall()
        return sorted((_job_from_row(row) for row in rows if row["held_for"] is None), key=lambda j: j.created_at)

    async def wake(self, now: datetime, *, limit: int, queue: str | None = None,
                   held_before: datetime | None = None) -> list[Job]:
        async with connection(self._pool) as conn:
            keys, queues = await flow.held_names(conn, limit) if queue is None else ([], [queue])
            return await flow.wake(conn, now, keys=keys, queues=queues, limit=limit, held_before=held_before)

    async def next_due_at(self) -> datetime | None:
        async with connection(self._pool) as conn:
            row = await (await conn.execute(sql.NEXT_JOB_DUE_AT)).fetchone()
        return None if row is None or row["due"] is None else row["due"].astimezone(UTC)

    async def runs(self, job_id: str) -> list[Run]:
        if (key := as_uuid(job_id)) is None:
            raise JobNotFound(job_id)
        async with connection(self._pool) as conn:
            rows = await (await conn.execute(sql.RUNS_OF_JOB, {"id": key})).fetchall()
        if not rows:
            raise JobNotFound(job_id)
        return [_run_from_row(row) for row in rows if row["id"] is not None]

    async def queue_stats(self, now: datetime, *, totals: bool = True) -> list[QueueStats]:
        query = sql.QUEUE_STATS if totals else sql.QUEUE_IN_FLIGHT
        counted = State if totals else IN_FLIGHT
        async with connection(self._pool) as conn:
            rows = await (await conn.execute(query, {"since": now - timedelta(minutes=1)})).fetchall()
            held_rows = await (await conn.execute(flow_sql.HELD_COUNTS)).fetchall()
        held: dict[str, dict[Hold, int]] = {}
        for row in held_rows:
            held.setdefault(row["queue"], {})[Hold(row["reason"])] = row["n"]
        stats: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = stats.setdefault(row["queue"], {"counts": {str(s): 0 for s in counted}, "oldest": None, "done": 0})
            if row["state"] is not None:
                entry["counts"][row["state"]] = row["n"]
            entry["done"] += row["finished"]
            if row["oldest_queued_at"] is not None:
                entry["oldest"] = row["oldest_queued_at"].astimezone(UTC)
        return [QueueStats(queue=queue, counts=e["counts"], oldest_queued_at=e["oldest"],
                           finished_last_minute=e["done"], held=held.get(queue, {}))
                for queue, e in sorted(stats.items())]

    async def save_many(self, changes: Sequence[Finished]) -> Recorded:
        if not changes:
            return Recorded(refused=[], woken=[])
        async with transaction(self._pool) as conn:
            keys, queues = await _freeing(conn, [item.job for item in changes])
            written = await write_jobs(conn, sql.SAVE_JOBS, changes, {})
            await flow.bump(conn, [item.job for item in changes if item.job.id in written and flow.in_flight(item.job)])
            woken = await flow.wake(conn, max(item.job.updated_at for item in changes), keys=keys, queues=queues)
        return Recorded(refused=[item.job.id for item in changes if item.job.id not in written], woken=woken)

    async def throughput(self, since: datetime, bucket: timedelta) -> list[Throughput]:
        async with connection(self._pool) as conn:
            rows = await (await conn.execute(sql.THROUGHPUT, {"since": since, "bucket": bucket})).fetchall()
        return [Throughput(queue=row["queue"], start=row["start"].astimezone(UTC), state=State(row["state"]),
                           count=row["n"]) for row in rows]

    async def prune(self, finished_before: datetime, limit: int) -> int:
        async with connection(self._pool) as conn:
            cur = await conn.execute(sql.PRUNE, {"before": finished_before, "limit": limit})
        return cur.rowcount


async def _insert(conn: Connection, jobs: Sequence[Job]) -> set[str] | None:
    """Store new jobs: the ids created, or None when all were (a batch without idempotency keys is copied in)."""
    if any(job.idempotency_key for job in jobs):
        cur = await conn.execute(sql.INSERT_JOBS, {"jobs": Json([job_record(j) for j in jobs])})
        return {str(row["id"]) for row in await cur.fetchall()}
    async with conn.cursor().copy(sql.COPY_JOBS) as copy:
        for row in job_copy_rows(jobs):
            await copy.write_row(row)
    return None


async def _freeing(conn: Connection, jobs: Sequence[Job]) -> tuple[set[str], set[str]]:
    """Keys and limiting queues whose slots these written jobs leave (now neither running nor dispatched),
    locked for waking before the write (flow_sql.py: locks before rows, so nothing deadlocks). The keys of jobs the
    write puts in flight (a manual retry: flow.bump adds them to their bounds) are locked with them, shared."""
    leaving = [job for job in jobs if not flow.in_flight(job)]
    keys = {job.concurrency_key for job in leaving if job.concurrency_key is not None}
    entering = {job.concurrency_key for job in jobs if flow.in_flight(job) and job.concurrency_key is not None}
    queues = await flow.limiting(conn, {job.queue for job in leaving})
    if keys or entering or queues:
        await flow.lock_for_waking(conn, keys | entering, queues)
    return keys, queues


def _filter_name(name: str, value: object) -> str:
    return "succeeded" if name == "state" and value == str(State.SUCCEEDED) else name


async def write_jobs(conn: Connection, query: LiteralString, outcomes: Sequence[Finished],
                     params: dict[str, Any]) -> set[str]:
    """Write transitioned jobs with their runs by `query` (a CAS or fenced update); the ids written."""
    jobs = Json([job_record(item.job) for item in outcomes])
    runs = Json([run_record(item.run) for item in outcomes if item.run is not None])
    rows = await (await conn.execute(query, {"jobs": jobs, "runs": runs, **params})).fetchall()
    return {str(row["id"]) for row in rows}


async def _by_keys(conn: Connection, keys: list[str]) -> dict[str, Job]:
    if not keys:
        return {}
    rows = await (await conn.execute(sql.JOBS_BY_IDEMPOTENCY_KEY, {"keys": keys})).fetchall()
    return {row["idempotency_key"]: _job_from_row(row) for row in rows}


def _existing(job: Job, existing: dict[str, Job]) -> Submitted:
    found = existing.get(job.idempotency_key or "")
    if found is None:  # the holder of the key vanished between the two statements (pruned): retryable
        raise StaleWrite(f"idempotency key {job.idempotency_key!r}")
    return Submitted(job=found, created=False)


def _conflict(exc: errors.UniqueViolation) -> Conflict:
    if exc.diag.constraint_name == "jobs_schedule_occurrence_key":
        return StaleWrite(f"an occurrence of a schedule that has its job already ({exc.diag.message_detail})")
    return Conflict(f"job already stored: {exc.diag.message_detail or exc}")
