"""Support for the tests that run real `gnomon scheduler` processes: seeding schedules and jobs, reading back
what the schedulers did (jobs, the occurrence ledger, the Redis lists, the processes' logs) and checking the
exactly-once rules on it."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from redis.asyncio import Redis

from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import create_pool, open_pool
from adapters.postgres.schedule_repository import PgScheduleRepository
from adapters.redis.dispatcher import PRIORITIES
from application.identity import new_id
from domain.job import Job, JobSpec
from domain.schedule import Schedule, ScheduleSpec

TICK_FIRED = re.compile(r"tick: TickReport\(promoted=(?P<promoted>\d+), fired=(?P<fired>\d+)")


def now() -> datetime:
    return datetime.now(UTC)


def interval_spec(name: str, seconds: int = 1) -> ScheduleSpec:
    return ScheduleSpec(name=name, job=JobSpec(task="noop", payload={"schedule": name}), interval_seconds=seconds)


def cron_spec(name: str, cron: str) -> ScheduleSpec:
    return ScheduleSpec(name=name, job=JobSpec(task="noop", payload={"schedule": name}), cron=cron)


async def add_schedules(url: str, specs: Sequence[ScheduleSpec]) -> list[Schedule]:
    """Create the schedules as the API would (next_fire_at computed from now); the values as created."""
    pool = create_pool(url, max_size=1)
    await open_pool(pool)
    try:
        repo = PgScheduleRepository(pool)
        made = []
        for spec in specs:
            at = now()
            schedule = Schedule.create(new_id(at), spec, now=at)
            await repo.add(schedule)
            made.append(schedule)
        return made
    finally:
        await pool.close()


def delayed_jobs(run_ats: Sequence[datetime], **spec: Any) -> list[Job]:
    at = now()
    return [Job.create(new_id(at), JobSpec(task="noop", run_at=run_at, **spec), now=at) for run_at in run_ats]


async def add_jobs(url: str, jobs: Sequence[Job]) -> None:
    pool = create_pool(url, max_size=1)
    await open_pool(pool)
    try:
        await PgJobRepository(pool).add(jobs)
    finally:
        await pool.close()


async def rows(url: str, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        return await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]


async def snapshot(url: str, queries: Sequence[str]) -> list[list[dict[str, Any]]]:
    """The rows of several queries read from one consistent snapshot (schedulers may be writing)."""
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        async with conn.transaction():
            return [await (await conn.execute(query)).fetchall() for query in queries]  # type: ignore[arg-type]


async def job_states(url: str, ids: Sequence[str]) -> dict[str, str]:
    found = await rows(url, "SELECT id::text, state FROM jobs WHERE id = ANY(%(ids)s::uuid[])", {"ids": list(ids)})
    return {row["id"]: row["state"] for row in found}


async def dispatched_ids(redis: Redis, prefix: str, queue: str = "default") -> list[str]:
    """Every id waiting in the Redis sorted sets of `queue` (a set per priority: an id waits once in each)."""
    ids: list[str] = []
    for priority in PRIORITIES:
        ids += [v.decode() if isinstance(v, bytes) else v
                for v in await redis.zrange(f"{{{prefix}:q:{queue}}}:z{priority}", 0, -1)]
    return ids


def fired_by_log(log: str) -> int:
    """How many jobs a scheduler process says it fired, from its tick lines."""
    return sum(int(m["fired"]) for m in TICK_FIRED.finditer(log))


async def check_exactly_once(url: str, created: Sequence[Schedule]) -> dict[str, int]:
    """Every schedule's occurrences from its first up to (excluding) its stored next_fire_at fired exactly
    once: one job per occurrence, one `fired` ledger entry naming that job, nothing else in the ledger.
    Returns the number of occurrences fired per schedule id."""
    jobs, ledger, schedules = await snapshot(url, [
        "SELECT id::text, schedule_id::text, scheduled_for FROM jobs WHERE schedule_id IS NOT NULL",
        "SELECT schedule_id::text, scheduled_for, fate, job_id::text FROM occurrences",
        "SELECT id::text, next_fire_at FROM schedules"])
    stored = {r["id"]: r["next_fire_at"] for r in schedules}
    pairs = Counter((j["schedule_id"], j["scheduled_for"]) for j in jobs)
    assert [p for p, n in pairs.items() if n > 1] == [], "an occurrence has more than one job"
    assert {e["fate"] for e in ledger} <= {"fired"}, f"unexpected fates: {Counter(e['fate'] for e in ledger)}"
    entries = Counter((e["schedule_id"], e["scheduled_for"], e["job_id"]) for e in ledger)
    assert [e for e, n in entries.items() if n > 1] == [], "an occurrence is in the ledger twice"
    assert set(entries) == {(j["schedule_id"], j["scheduled_for"], j["id"]) for j in jobs}, \
        "the ledger and the jobs disagree"
    fired: dict[str, set[datetime]] = defaultdict(set)
    for j in jobs:
        fired[j["schedule_id"]].add(j["scheduled_for"])
    for schedule in created:
        horizon = stored[schedule.id]
        expected = set(occurrences_before(schedule, horizon))
        assert fired[schedule.id] == expected, (
            f"{schedule.name}: missing {sorted(expected - fired[schedule.id])[:5]}, "
            f"extra {sorted(fired[schedule.id] - expected)[:5]} (next_fire_at {horizon})")
    return {s.id: len(fired[s.id]) for s in created}


def occurrences_before(schedule: Schedule, horizon: datetime) -> list[datetime]:
    """The nominal occurrences of a freshly created schedule, from its first one up to `horizon` (excluded)."""
    out: list[datetime] = []
    after = schedule.created_at
    while True:
        batch = [t for t in schedule.preview(100, after=after) if t < horizon]
        out += batch
        if len(batch) < 100:
            return out
        after = batch[-1]



async def claim_as(url: str, ids: Sequence[str], *, worker_id: str, lease_seconds: float) -> list[Job]:
    """Claim queued jobs for a worker that will never be heard of again."""
    pool = create_pool(url, max_size=1)
    await open_pool(pool)
    try:
        return await PgJobRepository(pool).claim(ids, worker_id=worker_id, now=now(), lease_seconds=lease_seconds)
    finally:
        await pool.close()


async def execute(url: str, query: str, params: dict[str, Any] | None = None) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query, params)  # type: ignore[arg-type]


async def count(url: str, query: str, params: dict[str, Any] | None = None) -> int:
    [row] = await rows(url, query, params)
    return int(next(iter(row.values())))
