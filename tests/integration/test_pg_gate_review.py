"""Review of V013 (dispatch gating's fast path, gnomon_gate_fast): a wake of a key runs beside a fast gating of it.

Both lock the key shared, so neither waits for the other, and neither counts what the other dispatches before it
commits: the wake dispatches up to `limit - in flight` held jobs, the fast gating up to 32 new ones, each against a
count that leaves the other out. V013's bound (in flight + 8 x 32 <= the smallest limit) counts only other fast
gatings among the deciders it cannot see; a wake is one too. Up to V012 gating locked the key exclusively and so
waited for the wake (and the wake for it) and counted what it had dispatched.

V015 mends it: a key with a job held behind it gates exactly, so a fast gating never runs beside a wake that has
anything to dispatch. These tests failed on V013 and V014 (332 in flight for 300; 492-556 with 8 racing submits).

The backdrop: a key whose limit is 300 with 300 jobs held and nothing in flight (the 300 jobs that ran lost their
worker: their leases expired), what the rescue's and the sweep's wakes find. Rule (docs/design.md, "Flow control"):
a key never has more than its limit of jobs dispatched or running.

And the plan of the fast gate's count (last test): with statistics from before a burst, it read every dispatched job
once per key."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from adapters.postgres import flow, flow_sql
from adapters.postgres.job_repository import PgJobRepository, _insert
from adapters.postgres.pool import Pool, create_pool, open_pool
from tests.contracts.repositories import make_job
from tests.integration.test_pg_flow import Plans, _explaining, _read

LIMIT = 300  # the fast path needs in flight + 8 x 32 <= 300: in flight <= 44
NEW = 32  # one submit of the most the fast path takes of a key
IN_FLIGHT = """
SELECT count(*) AS n FROM jobs WHERE concurrency_key = 'k'
  AND ((state = 'running' AND lease_expires_at > now()) OR (state = 'queued' AND held_for IS NULL))"""
WAITING = """
SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


def now() -> datetime:
    return datetime.now(UTC)


async def backlog(pool: Pool, pg_url: str) -> None:
    """300 jobs of key k ran and lost their worker (leases expired), 300 more are held for the key."""
    jobs = PgJobRepository(pool)
    ran = [make_job(now(), concurrency_key="k", concurrency_limit=LIMIT) for _ in range(LIMIT)]
    await jobs.add(ran)  # 300 in one batch: exact gating, all dispatched
    waiting = [make_job(now(), concurrency_key="k", concurrency_limit=LIMIT) for _ in range(LIMIT)]
    assert all(s.job.held for s in await jobs.add(waiting))  # the key is full: all held
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("UPDATE jobs SET state = 'running', attempt = 1, lease_worker = 'lost', lease_token = 1,"
                           " started_at = now() - interval '10 minutes',"
                           " lease_expires_at = now() - interval '1 minute' WHERE id = ANY(%(ids)s::uuid[])",
                           {"ids": [j.id for j in ran]})
    assert await in_flight(pg_url) == 0


async def in_flight(pg_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
        row = await (await conn.execute(IN_FLIGHT)).fetchone()
    assert row is not None
    return int(row["n"])


async def settled(task: asyncio.Task[Any], pg_url: str) -> None:
    """Until `task` has finished or waits for an advisory lock (no timing: whichever comes first)."""
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row, autocommit=True) as conn:
        while not task.done():
            row = await (await conn.execute(WAITING)).fetchone()
            if row is not None and row["n"] > 0:
                return
            await asyncio.sleep(0.01)


def start(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro)


def wake_params() -> dict[str, Any]:
    return {"now": now(), "keys": ["k"], "queues": [], "limit": 10_000, "held_before": None}


async def test_a_submit_beside_a_wake_in_progress_never_dispatches_beyond_the_keys_limit(pool: Pool,
                                                                                        pg_url: str) -> None:
    await backlog(pool, pg_url)
    waker = await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row)
    try:
        woken = await (await waker.execute(flow_sql.WAKE, wake_params())).fetchall()
        assert len(woken) == LIMIT  # room 300 - 0; the waker's transaction (a rescue, the sweep) not committed yet
        new = [make_job(now(), concurrency_key="k", concurrency_limit=LIMIT) for _ in range(NEW)]
        submit = start(PgJobRepository(pool).add(new))
        await settled(submit, pg_url)  # V012: waits for the key's exclusive lock; V013: fast, done
        await waker.commit()
        await submit
    finally:
        await waker.close()
    assert await in_flight(pg_url) <= LIMIT  # V013: 332


async def test_a_wake_beside_a_submit_in_progress_never_dispatches_beyond_the_keys_limit(pool: Pool,
                                                                                        pg_url: str) -> None:
    await backlog(pool, pg_url)
    submitter = await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row)
    try:
        new = [make_job(now(), concurrency_key="k", concurrency_limit=LIMIT) for _ in range(NEW)]
        gated = await flow.gate_new(submitter, new, now())  # a submit between its gating and its commit
        await _insert(submitter, gated)

        async def wake() -> list[Any]:
            async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row, autocommit=True) as conn:
                return await (await conn.execute(flow_sql.WAKE, wake_params())).fetchall()

        waking = start(wake())
        await settled(waking, pg_url)  # V012: waits for the submit's exclusive lock; V013: wakes 300 at once
        await submitter.commit()
        await waking
    finally:
        await submitter.close()
    assert await in_flight(pg_url) <= LIMIT  # V013: 332


async def test_submits_and_a_wake_racing_never_dispatch_beyond_the_keys_limit(pool: Pool, pg_url: str) -> None:
    """8 connections submit 32 jobs of the key each while the sweep wakes its held jobs: V013 lets them all in."""
    await backlog(pool, pg_url)
    pools = [create_pool(pg_url, max_size=1) for _ in range(8)]
    for made in pools:
        await open_pool(made)
    waker = await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row)
    try:
        await waker.execute(flow_sql.WAKE, wake_params())
        submits = [start(PgJobRepository(made).add([make_job(now(), concurrency_key="k", concurrency_limit=LIMIT)
                                                    for _ in range(NEW)])) for made in pools]
        for submit in submits:
            await settled(submit, pg_url)
        await waker.commit()
        await asyncio.gather(*submits)
    finally:
        await waker.close()
        for made in pools:
            await made.close()
    assert await in_flight(pg_url) <= LIMIT  # V013: 300 woken + up to 8 x 32 admitted


async def test_the_wake_and_the_fast_gate_leave_the_key_with_exactly_its_limit_in_flight(pool: Pool,
                                                                                        pg_url: str) -> None:
    """Sequentially (no race) the same backdrop ends at the limit: the race above is the only difference."""
    await backlog(pool, pg_url)
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row, autocommit=True) as conn:
        assert len(await (await conn.execute(flow_sql.WAKE, wake_params())).fetchall()) == LIMIT
    added = await PgJobRepository(pool).add([make_job(now(), concurrency_key="k", concurrency_limit=LIMIT)
                                             for _ in range(NEW)])
    assert all(s.job.held for s in added)
    assert await in_flight(pg_url) == LIMIT



async def test_the_fast_gate_counts_its_keys_jobs_once_not_every_dispatched_job_per_key(pg_url: str) -> None:
    """Statistics of a quiet spell (the table analysed while nothing was queued, as after a warm-up), then a burst:
    10,000 unkeyed jobs and 1,000 of 20 keys dispatched. V013's count of a key's dispatched jobs, a subquery per key,
    is planned through jobs_queued_dispatched and reads every dispatched job of the cluster once per key (20 x
    11,000 rows); reading each key's jobs, or every queued job a constant number of times (not once per key), stays
    within the bound."""
    pool = create_pool(pg_url, max_size=1)
    await open_pool(pool)
    jobs, keys = PgJobRepository(pool), [f"t-{i}" for i in range(20)]
    try:
        await jobs.add([make_job(now()) for _ in range(200)])
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("UPDATE jobs SET state = 'succeeded', finished_at = now()")
            await conn.execute("ANALYZE jobs")
        await jobs.add([make_job(now()) for _ in range(10_000)])
        await jobs.add([make_job(now(), concurrency_key=keys[i % 20], concurrency_limit=100_000) for i in range(1000)])
    finally:
        await pool.close()
    params = {"keys": keys, "limits": [100_000] * 20, "now": now(), "deciding": [], "stripes": 8, "share": 32}
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await _explaining(conn, generic=False)
        plans = Plans()
        conn.add_notice_handler(plans)
        async with conn.transaction(force_rollback=True):
            row = await (await conn.execute(flow_sql.GATE_FAST, params)).fetchone()
        found = plans.take()
    assert row is not None and row[0] is True and found
    read = sum(_read(plan) for plan in found)
    assert read <= 2 * 11_000 + 5 * 1000, read  # V013: 220,040
