"""Real `gnomon scheduler` processes on PostgreSQL and Redis: several replicas fire every occurrence exactly
once and share the work; a kill -9 loses nothing and repeats nothing; lost workers' jobs are rescued; old
finished jobs are pruned; a submitted job wakes a sleeping scheduler.

Waits are for outcomes with generous bounds, never assertions on timing: a slow machine passes, a scheduler
that does the wrong thing fails."""

from __future__ import annotations

import asyncio
import random
from contextlib import ExitStack
from datetime import datetime, timedelta

from redis.asyncio import Redis

from domain.job import JobSpec, State
from tests.integration.processes import GnomonProcess, gnomon, gnomon_env
from tests.integration.scheduling import (
    add_jobs,
    add_schedules,
    check_exactly_once,
    claim_as,
    count,
    cron_spec,
    delayed_jobs,
    dispatched_ids,
    execute,
    fired_by_log,
    interval_spec,
    job_states,
    now,
    rows,
)
from tests.integration.stack import QUICK_RETRY, client

REPLICAS = 3
GUARD = 60.0  # seconds: far beyond any healthy scheduler; reaching it means the work was not done


def many_schedules() -> list:
    return ([interval_spec(f"every-second-{i}") for i in range(200)]
            + [cron_spec(f"cron-every-second-{i}", "* * * * * *") for i in range(10)]
            + [cron_spec(f"cron-even-seconds-{i}", "*/2 * * * * *") for i in range(10)])


async def wait_until(condition, what: str, timeout: float = GUARD) -> None:
    """Poll an async condition until it holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await condition():
        if loop.time() > end:
            raise AssertionError(f"not done after {timeout} s: {what}")
        await asyncio.sleep(0.1)


def start_schedulers(stack: ExitStack, env: dict[str, str], count: int) -> list[GnomonProcess]:
    processes = [stack.enter_context(gnomon("scheduler", env=env)) for _ in range(count)]
    for process in processes:
        process.wait_for_log("ready")
    return processes


async def test_three_schedulers_fire_every_occurrence_exactly_once_and_share_the_work(
        pg_url: str, redis_url: str, redis_client: Redis, redis_prefix: str) -> None:
    created = await add_schedules(pg_url, many_schedules())
    with ExitStack() as stack:
        processes = start_schedulers(stack, gnomon_env(pg_url, redis_url, prefix=redis_prefix), REPLICAS)
        await asyncio.sleep(8)
        codes = [p.terminate() for p in processes]
        logs = [p.log for p in processes]
    assert codes == [0] * REPLICAS
    fired = await check_exactly_once(pg_url, created)
    assert min(fired.values()) >= 3, "every schedule fired a few times in 8 s"
    total = sum(fired.values())
    shares = [fired_by_log(log) for log in logs]
    print(f"jobs fired: {total}; by replica (from their logs): {shares}")
    assert sum(shares) <= total
    assert sum(1 for share in shares if share > 0) >= 2, f"the work was not shared: {shares}"
    in_redis = await dispatched_ids(redis_client, redis_prefix)
    assert len(in_redis) == len(set(in_redis)), "a job was dispatched twice"
    jobs = {r["id"] for r in await rows(pg_url, "SELECT id::text FROM jobs WHERE schedule_id IS NOT NULL")}
    assert set(in_redis) <= jobs and len(in_redis) >= total - len(created)  # the last tick's push may be cut


async def test_kill_9_at_any_time_loses_nothing_and_repeats_nothing(
        pg_url: str, redis_url: str, redis_client: Redis, redis_prefix: str) -> None:
    created = await add_schedules(pg_url, many_schedules()[:100])
    start = now()
    delayed = delayed_jobs([start + timedelta(seconds=random.uniform(0.5, 6)) for _ in range(2000)])
    await add_jobs(pg_url, delayed)
    env = gnomon_env(pg_url, redis_url, prefix=redis_prefix, dispatch_timeout_seconds=2)
    for _ in range(4):  # crash a pair of replicas at random instants, several times
        with ExitStack() as stack:
            pair = start_schedulers(stack, env, 2)
            await asyncio.sleep(random.uniform(0.3, 2.0))
            for process in pair:
                process.kill()
    with ExitStack() as stack:
        [last] = start_schedulers(stack, env, 1)
        ids = [j.id for j in delayed]

        async def all_queued() -> bool:
            return set((await job_states(pg_url, ids)).values()) == {"queued"}

        await wait_until(all_queued, "every delayed job queued")

        async def all_dispatched() -> bool:
            return set(ids) <= set(await dispatched_ids(redis_client, redis_prefix))

        await wait_until(all_dispatched, "every delayed job dispatched (re-dispatched after a crash)")
        assert last.terminate() == 0
    await check_exactly_once(pg_url, created)


async def test_a_job_whose_worker_vanished_is_rescued_after_its_lease(
        pg_url: str, redis_url: str, redis_client: Redis, redis_prefix: str) -> None:
    retried, failed = delayed_jobs([now()], backoff=QUICK_RETRY) + delayed_jobs([now()], max_attempts=1)
    await add_jobs(pg_url, [retried, failed])
    claimed = await claim_as(pg_url, [retried.id, failed.id], worker_id="ghost-worker", lease_seconds=1)
    assert len(claimed) == 2
    with gnomon("scheduler", env=gnomon_env(pg_url, redis_url, prefix=redis_prefix)) as scheduler:
        scheduler.wait_for_log("ready")

        async def rescued() -> bool:
            states = await job_states(pg_url, [retried.id, failed.id])
            return states == {retried.id: "queued", failed.id: "failed"} and retried.id in await dispatched_ids(
                redis_client, redis_prefix)

        await wait_until(rescued, "the job retried (queued and dispatched again) and the last attempt failed")
        assert scheduler.terminate() == 0
        assert "lost its worker ghost-worker" in scheduler.log
    runs = await rows(pg_url, "SELECT job_id::text, attempt, worker_id, outcome FROM runs ORDER BY job_id")
    assert sorted((r["job_id"], r["attempt"], r["worker_id"], r["outcome"]) for r in runs) == sorted(
        [(retried.id, 1, "ghost-worker", "lost"), (failed.id, 1, "ghost-worker", "lost")])


async def test_finished_jobs_older_than_the_retention_are_pruned_with_their_runs(
        pg_url: str, redis_url: str, redis_prefix: str) -> None:
    far = now() + timedelta(days=1)
    old, recent, waiting = delayed_jobs([far] * 2600), delayed_jobs([far] * 50), delayed_jobs([far] * 50)
    await add_jobs(pg_url, old + recent + waiting)
    for jobs, state, age in ((old[:2500], "succeeded", 2), (old[2500:], "failed", 3), (recent, "succeeded", 0.2)):
        await finish(pg_url, [j.id for j in jobs], state, now() - timedelta(hours=age))
    env = gnomon_env(pg_url, redis_url, prefix=redis_prefix, retention="1h")
    with gnomon("scheduler", env=env) as scheduler:
        scheduler.wait_for_log("ready")

        async def pruned() -> bool:
            return await count(pg_url, "SELECT count(*) FROM jobs WHERE id = ANY(%(ids)s::uuid[])",
                               {"ids": [j.id for j in old]}) == 0

        await wait_until(pruned, "the old finished jobs pruned (1000 per sweep)")
        assert scheduler.terminate() == 0
    kept = {j.id for j in recent + waiting}
    assert set(await job_states(pg_url, [j.id for j in recent + waiting])) == kept
    assert await count(pg_url, "SELECT count(*) FROM runs") == len(recent)


async def finish(url: str, ids: list[str], state: str, at: datetime) -> None:
    """Make jobs look finished at `at` after one attempt, with its run."""
    await execute(url, "UPDATE jobs SET state = %(state)s, attempt = 1, started_at = %(at)s, finished_at = %(at)s"
                       " WHERE id = ANY(%(ids)s::uuid[])", {"ids": ids, "state": state, "at": at})
    await execute(url, "INSERT INTO runs (job_id, attempt, worker_id, started_at, finished_at, outcome)"
                       " SELECT id, 1, 'w', started_at, finished_at, state FROM jobs WHERE id = ANY(%(ids)s::uuid[])",
                  {"ids": ids})


async def test_a_submitted_delayed_job_wakes_the_sleeping_scheduler(
        pg_url: str, redis_url: str, redis_prefix: str) -> None:
    with gnomon("scheduler", env=gnomon_env(pg_url, redis_url, prefix=redis_prefix)) as scheduler:
        scheduler.wait_for_log("ready")
        lateness = []
        async with client(pg_url, redis_url, redis_prefix) as submitter:
            for _ in range(5):
                await asyncio.sleep(0.3)  # let the scheduler fall asleep on an empty database
                [job_id] = await submitter.submit(JobSpec(task="noop", run_at=now() + timedelta(seconds=1)))
                job = await submitter.until(job_id, State.QUEUED, timeout=GUARD)
                assert job.dispatched_at is not None
                lateness.append((job.dispatched_at - job.run_at).total_seconds())
        assert scheduler.terminate() == 0
    print(f"lateness of delayed jobs (s): {', '.join(f'{s:.3f}' for s in lateness)}")
    assert all(s >= 0 for s in lateness), "never promoted before its run_at"
