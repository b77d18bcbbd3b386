"""A schedule's cancel_other on PostgreSQL and Redis (its contract runs in test_pg_repositories.py): the
scheduler's tick treating the cancel as any cancel - the cancelled job's worker hears of it on the Redis channel
at once, and the jobs held behind its key are pushed to Redis in the same tick, not at a later sweep."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from attrs import evolve
from redis.asyncio import Redis

from adapters.memory.clock import FrozenClock
from adapters.memory.metrics import RecordingMetrics
from adapters.postgres import flow_sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import Pool
from adapters.postgres.schedule_repository import PgScheduleRepository
from adapters.redis.cancellations import RedisCancellations
from adapters.redis.dispatcher import RedisDispatcher
from application.identity import new_id
from application.ports import JobFilter
from application.scheduler import SchedulerTick
from domain.job import Hold, JobSpec, State
from tests.contracts.repositories import at, make_job, make_schedule
from tests.integration.conftest import OpenPool


@pytest.fixture
async def pool(open_pools: OpenPool) -> Pool:
    return await open_pools(max_size=4)


async def test_a_tick_that_cancels_a_running_job_tells_its_worker_and_pushes_what_waited_behind_it(
        pool: Pool, redis_client: Redis, redis_prefix: str) -> None:
    jobs, schedules = PgJobRepository(pool), PgScheduleRepository(pool)
    dispatcher = RedisDispatcher(redis_client, redis_prefix)
    cancellations = RedisCancellations(redis_client, redis_prefix)
    listener = RedisCancellations(redis_client, redis_prefix)  # a worker's subscription
    assert await listener.listen(timeout=0) == []
    clock, metrics = FrozenClock(at(60)), RecordingMetrics()
    tick = SchedulerTick(jobs, schedules, dispatcher, clock, metrics=metrics, cancellations=cancellations)
    schedule = make_schedule(overlap_policy="cancel_other",
                             job=JobSpec(task="noop", concurrency_key="nightly", concurrency_limit=1))
    await schedules.add(schedule)
    await tick(sweep=False)
    [first] = await dispatcher.pop(["default"], limit=10, timeout=1)
    await jobs.claim([first], worker_id="w1", now=at(61), lease_seconds=600)
    [waiting] = [s.job for s in await jobs.add([make_job(at(70), concurrency_key="nightly")])]
    assert waiting.held_for is Hold.KEY

    clock.at = at(120)
    report = await tick(sweep=False)

    try:
        assert report.fired == 1
        assert (await jobs.get(first)).state is State.CANCELLED
        assert await listener.listen(timeout=10) == [first]  # a bound to wait for the message, not a timing check
        assert await dispatcher.pop(["default"], limit=10, timeout=1) == [waiting.id]
        assert not (await jobs.get(waiting.id)).held
        fired = (await jobs.list(JobFilter(schedule_id=schedule.id), limit=10, cursor=None)).items
        [second] = [j for j in fired if j.id != first]
        assert second.held_for is Hold.KEY  # behind the job that waited, which took the key's slot first
        assert metrics.counters["finished", "default", "noop", "cancelled"] == 1
        assert metrics.counters["woken", "default", "cancel"] == 1
    finally:
        await listener.close()


async def test_a_firing_recorded_while_a_tick_holds_its_schedule_waits_for_it_instead_of_deadlocking(
        pool: Pool, pg_url: str) -> None:
    """The tick locks a due schedule's row, then the flow locks of its firing (keys, queues). A firing recorded
    from the API (trigger, resume, backfill) takes them in the same order: it used to take the key's lock first
    (gating its new job) and then wait for the row (the job's foreign key), which deadlocked with such a tick."""
    schedules = PgScheduleRepository(pool)
    schedule = make_schedule(overlap_policy="cancel_other", job=JobSpec(task="noop", concurrency_key="nightly"))
    await schedules.add(schedule)
    firing = schedule.trigger(now=at(10), new_id=new_id)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as tick:
        async with tick.transaction():
            await tick.execute("SELECT 1 FROM schedules WHERE id = %s FOR UPDATE", [schedule.id])
            recording = asyncio.create_task(schedules.record(firing))
            await _until_a_session_waits_for_a_lock(tick)
            await tick.execute(flow_sql.LOCK_FOR_HOLDING, {"keys": ["nightly"], "queues": []})
        fired = await asyncio.wait_for(recording, 30)
    assert [(j.schedule_id, j.held) for j in fired.jobs] == [(schedule.id, False)]


async def _until_a_session_waits_for_a_lock(conn: psycopg.AsyncConnection, seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
             " AND pid <> pg_backend_pid()")
    while (await (await conn.execute(query)).fetchone())[0] == 0:  # type: ignore[index]
        assert loop.time() < end, "the recording never waited for the tick's lock"
        await asyncio.sleep(0.01)


async def test_a_firing_that_cancels_an_unkeyed_job_for_a_keyed_one_waits_for_the_key_before_the_row(
        pool: Pool, pg_url: str) -> None:
    """A schedule given a concurrency key after its last firing: the job it cancels has no key (no flow lock),
    the job it fires has one. The firing used to lock the cancelled job's row first and the new key next (gating),
    while a claim whose batch held both locks the key first and the row next: a deadlock. The key comes first now."""
    jobs, schedules = PgJobRepository(pool), PgScheduleRepository(pool)
    schedule = make_schedule(overlap_policy="cancel_other")
    await schedules.add(schedule)
    first = (await schedules.record(schedule.plan(now=at(60), previous=None, new_id=new_id))).jobs[0]
    await jobs.claim([first.id], worker_id="w1", now=at(61), lease_seconds=600)
    stored = await schedules.get(schedule.id)
    keyed = evolve(stored, spec=evolve(stored.spec, job=JobSpec(task="noop", concurrency_key="nightly")))
    firing = keyed.plan(now=at(120), previous=await jobs.get(first.id), new_id=new_id)
    assert firing.cancel_job_ids == (first.id,)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as claim:
        async with claim.transaction():
            await claim.execute(flow_sql.LOCK_FOR_HOLDING, {"keys": ["nightly"], "queues": []})
            recording = asyncio.create_task(schedules.record(firing))
            await _until_a_session_waits_for_a_lock(claim)
            await claim.execute("SET LOCAL lock_timeout = '10s'")
            await claim.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", [first.id])
        fired = await asyncio.wait_for(recording, 30)
    assert [f.job.id for f in fired.cancelled] == [first.id]
    assert (await jobs.get(first.id)).state is State.CANCELLED
