"""Dispatch gating's bounds (V016, docs/design.md "Dispatch gating reads a bound"): per key, an upper bound of what
it has in flight, raised by every dispatch (fast gating, wakes, manual retries) and set back to the exact count by an
exact gating. The fast gating reads it instead of counting the key's jobs in flight."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from adapters.postgres import flow, flow_sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import Pool
from application.ports import Finished
from domain.job import Job, State
from tests.contracts.repositories import make_job
from tests.integration.conftest import OpenPool
from tests.integration.test_pg_flow_fast_claim import gate, session

LEASE = 300
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def now() -> datetime:
    return datetime.now(UTC)


async def bounds(pg_url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
        rows = await (await conn.execute("SELECT key, sum(admitted) AS n FROM gate_bounds GROUP BY key")).fetchall()
    return {row["key"]: int(row["n"]) for row in rows}


async def in_flight(pg_url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
        rows = await (await conn.execute(
            "SELECT concurrency_key AS key, count(*) AS n FROM jobs WHERE concurrency_key IS NOT NULL"
            " AND (state = 'running' OR (state = 'queued' AND held_for IS NULL)) GROUP BY 1")).fetchall()
    return {row["key"]: int(row["n"]) for row in rows}


async def inflate(pg_url: str, key: str, to: int) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO gate_bounds (key, stripe, admitted) VALUES (%s, 15, %s)"
                           " ON CONFLICT (key, stripe) DO UPDATE SET admitted = excluded.admitted", (key, to))


def keyed(key: str, limit: int, n: int) -> list[Job]:
    return [make_job(now(), concurrency_key=key, concurrency_limit=limit) for _ in range(n)]


async def test_a_fast_gating_adds_what_it_admits_and_an_exact_one_sets_the_bound_to_what_is_in_flight(
        pool: Pool, pg_url: str) -> None:
    repo = PgJobRepository(pool)
    await repo.add(keyed("a", 1000, 20) + keyed("b", 1000, 5))  # fast: 20 and 5 of a share of 32
    assert await bounds(pg_url) == {"a": 20, "b": 5}
    await repo.add(keyed("a", 1000, 10))
    assert await bounds(pg_url) == {"a": 30, "b": 5}

    await inflate(pg_url, "a", 900)  # as if 900 more had been dispatched: 930 + 256 > 1000
    submitted = await repo.add(keyed("a", 1000, 10))  # the exact path: counts 30 in flight, admits 10
    assert not any(s.job.held for s in submitted)
    assert await bounds(pg_url) == {"a": 40, "b": 5} == await in_flight(pg_url)


async def test_with_a_bound_near_the_limit_gating_waits_for_the_key_and_after_the_reset_it_does_not(
        pool: Pool, pg_url: str) -> None:
    await PgJobRepository(pool).add(keyed("k", 1000, 3))
    await inflate(pg_url, "k", 800)  # 803 + 256 > 1000, though 3 are in flight
    waker, submitter = await session(pg_url), await session(pg_url)
    try:
        await waker.execute(flow_sql.LOCK_FOR_WAKING, {"keys": ["k"], "queues": []})  # a finish, in progress
        with pytest.raises(psycopg.errors.LockNotAvailable):  # the exact path locks the key exclusively
            await gate(submitter, keyed("k", 1000, 1))
        await waker.rollback()
        await gate(submitter, keyed("k", 1000, 1))  # exact again: resets the bound to 3 + 1
        assert (await bounds(pg_url))["k"] == 4
        await waker.execute(flow_sql.LOCK_FOR_WAKING, {"keys": ["k"], "queues": []})
        assert not any(job.held for job in await gate(submitter, keyed("k", 1000, 1)))  # fast: no wait
    finally:
        await waker.close()
        await submitter.close()


async def finish(repo: PgJobRepository, jobs: list[Job]) -> list[Job]:
    """Succeed these running jobs; the jobs their finish woke."""
    done = [Finished(job=job.succeed(token=job.version, now=now())[0], run=None) for job in jobs]
    return (await repo.finish(done, now=now())).woken


async def test_a_wake_adds_the_held_jobs_it_dispatches(pool: Pool, pg_url: str) -> None:
    repo = PgJobRepository(pool)
    submitted = [s.job for s in await repo.add(keyed("w", 2, 5))]
    assert sum(job.held for job in submitted) == 3
    running = await repo.claim([job.id for job in submitted if not job.held], worker_id="w", now=now(),
                               lease_seconds=LEASE)
    assert len(running) == 2 and (await bounds(pg_url))["w"] == 2

    woken = await finish(repo, running)

    assert len(woken) == 2
    assert (await bounds(pg_url))["w"] == 4 >= (await in_flight(pg_url))["w"] == 2


async def test_a_manual_retry_adds_the_job_it_queues(pool: Pool, pg_url: str) -> None:
    repo = PgJobRepository(pool)
    [job] = [s.job for s in await repo.add([make_job(now(), concurrency_key="r", concurrency_limit=1000,
                                                     max_attempts=1)])]
    [running] = await repo.claim([job.id], worker_id="w", now=now(), lease_seconds=LEASE)
    await repo.finish([Finished(job=running.fail(token=running.version, error="boom", now=now())[0], run=None)],
                      now=now())
    failed = await repo.get(job.id)
    assert failed.state is State.FAILED

    await repo.save(failed.retry_now(now=now()))

    assert (await bounds(pg_url))["r"] == 2 >= (await in_flight(pg_url))["r"] == 1


async def test_the_migration_starts_each_key_at_what_it_has_in_flight(pool: Pool, pg_url: str) -> None:
    repo = PgJobRepository(pool)
    submitted = [s.job for s in await repo.add(keyed("m", 3, 5) + keyed("n", 1000, 4))]  # m: 3 dispatched, 2 held
    await repo.claim([job.id for job in submitted if job.concurrency_key == "n"][:2], worker_id="w", now=now(),
                     lease_seconds=LEASE)
    script = (MIGRATIONS / "V016__gate_bounds.sql").read_text()
    initial = script[script.index("INSERT INTO gate_bounds"):script.index(";", script.index("INSERT INTO gate_bounds"))]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("DELETE FROM gate_bounds")
        await conn.execute(initial)  # type: ignore[call-overload]  # the migration's own statement

    assert await bounds(pg_url) == {"m": 3, "n": 4} == await in_flight(pg_url)


RACE_KEYS = {"far": 100_000, "mid": 400, "near": 40, "small": 3}


async def test_under_racing_submits_claims_finishes_and_wakes_a_bound_never_falls_below_what_is_in_flight(
        open_pools: OpenPool, pg_url: str) -> None:
    """8 connections submit random batches of four keys' jobs, claim what they dispatched and finish it (each
    finish wakes held jobs): at the end every key's bound is at least what it has in flight, and what runs never
    exceeded a limit."""
    pools = [await open_pools(max_size=1) for _ in range(8)]
    dispatched: list[str] = []
    peak: dict[str, int] = dict.fromkeys(RACE_KEYS, 0)

    async def actor(repo: PgJobRepository, rounds: int) -> None:
        for _ in range(rounds):
            key = random.choice(list(RACE_KEYS))
            batch = keyed(key, RACE_KEYS[key], random.randint(1, 40))
            dispatched.extend(s.job.id for s in await repo.add(batch) if not s.job.held)
            take = [dispatched.pop() for _ in range(min(len(dispatched), random.randint(1, 30)))]
            running = await repo.claim(take, worker_id=f"w{id(repo)}", now=now(), lease_seconds=LEASE)
            counts = await in_flight_running(pg_url)
            for k, n in counts.items():
                peak[k] = max(peak[k], n)
            if running and random.random() < 0.7:
                woken = await finish(repo, random.sample(running, random.randint(1, len(running))))
                dispatched.extend(job.id for job in woken)

    await asyncio.gather(*(actor(PgJobRepository(p), 25) for p in pools))

    flying, bound = await in_flight(pg_url), await bounds(pg_url)
    assert all(bound.get(key, 0) >= n for key, n in flying.items()), (bound, flying)
    assert all(peak[key] <= limit for key, limit in RACE_KEYS.items()), peak


async def in_flight_running(pg_url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
        rows = await (await conn.execute(
            "SELECT concurrency_key AS key, count(*) AS n FROM jobs WHERE state = 'running'"
            " AND lease_expires_at > %s GROUP BY 1", (now(),))).fetchall()
    return {row["key"]: int(row["n"]) for row in rows}


# -- review s4: an exact gating's reset locked its rows in the order its plan read them (a hash join over a sequential
# scan with many keys: physical order), the additions that take no key lock (a manual retry, a queue's wake) in key
# order; an exact gating holding a row of z and waiting for one of m, while a bump held (a, 8+x) and waited for
# (z, 8+x), deadlocked. LOCK_BOUNDS now locks them in (key, stripe) order first.

async def _waiting(pg_url: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for _ in range(500):
            row = await (await conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                            (pid,))).fetchone()
            if row and row[0] == "Lock":
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


async def test_an_exact_gating_and_an_unlocked_bump_deadlock_on_gate_bounds_rows(pool: Pool, pg_url: str) -> None:
    fillers = [f"f{i:03d}" for i in range(146)]  # enough keys for the planner to hash-join a seq scan
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for key in ("z", "m", "a"):  # physical order: z's rows, then m's, then a's
            await conn.execute("INSERT INTO gate_bounds (key, stripe, admitted)"
                               " SELECT %s, s, 0 FROM generate_series(0, 15) AS s", (key,))
    retry_m, retry_az, submit = [await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row)
                                 for _ in range(3)]
    try:
        await flow.bump(retry_m, keyed("m", 1000, 1))  # a manual retry of m, not yet committed: holds (m, 8+y)
        batch = [job for key in ["a", "m", "z", *fillers] for job in keyed(key, 1, 1)]  # limit 1: the exact path

        async def gate_exactly() -> None:
            async with submit.transaction():
                await flow.gate_new(submit, batch, now())

        gating = asyncio.create_task(gate_exactly())
        await _waiting(pg_url, submit.info.backend_pid)  # RESET: z's rows locked, waiting for (m, 8+y)

        async def bump_a_and_z() -> None:  # a bulk retry of jobs of a and z (save_many's BUMP)
            async with retry_az.transaction():
                await flow.bump(retry_az, keyed("a", 1000, 1) + keyed("z", 1000, 1))

        bumping = asyncio.create_task(bump_a_and_z())
        await _waiting(pg_url, retry_az.info.backend_pid)  # holds (a, 8+x), waits for (z, 8+x)
        await retry_m.commit()

        outcomes = await asyncio.wait_for(asyncio.gather(gating, bumping, return_exceptions=True), 30)
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    finally:
        for conn in (retry_m, retry_az, submit):
            await conn.close()


async def test_a_reset_waiting_for_a_bump_that_waits_for_another_does_not_deadlock(pool: Pool, pg_url: str) -> None:
    """Review s4b: a reset that deleted rows added after a separate lock statement deadlocked with bulk additions.
    The reset locks the rows it replaces in (key, stripe) order in its own statement: a bump holding (a, s) and
    waiting for (b, s) (held by a third writer) makes the reset wait, and everything commits."""
    reset_conn, bulk, third = [await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) for _ in range(3)]
    try:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            for key in ("a", "b"):
                await conn.execute("INSERT INTO gate_bounds (key, stripe, admitted) SELECT %s, s, 1"
                                   " FROM generate_series(0, 15) AS s", (key,))
        await third.execute("UPDATE gate_bounds SET admitted = admitted + 1 WHERE key = 'b'")  # holds b's rows

        async def bulk_retry() -> None:  # save_many's BUMP of a and b: takes (a, s), waits for (b, s)
            async with bulk.transaction():
                await flow.bump(bulk, keyed("a", 1000, 1) + keyed("b", 1000, 1))

        bumping = asyncio.create_task(bulk_retry())
        await _waiting(pg_url, bulk.info.backend_pid)

        async def reset() -> None:
            async with reset_conn.transaction():
                await reset_conn.execute(flow_sql.RESET_BOUNDS, {"keys": ["a", "b"], "counts": [5, 7]})

        resetting = asyncio.create_task(reset())
        await _waiting(pg_url, reset_conn.info.backend_pid)
        await third.commit()

        outcomes = await asyncio.wait_for(asyncio.gather(resetting, bumping, return_exceptions=True), 30)
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        assert await bounds(pg_url) == {"a": 5, "b": 7}  # the reset ran last: one row per key
    finally:
        for conn in (reset_conn, bulk, third):
            await conn.close()
