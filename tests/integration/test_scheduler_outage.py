"""A `gnomon scheduler` whose PostgreSQL goes away and comes back (a throwaway cluster of the test, stopped
cleanly or crashed): it logs the loss, keeps its process, reconnects its pool and its LISTEN connection, and
goes on: every job submitted before and after the outage is queued and dispatched, every schedule occurrence
fires exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from tests.integration.cluster import Cluster, StopMode
from tests.integration.processes import gnomon, gnomon_env
from tests.integration.scheduling import (
    add_jobs,
    add_schedules,
    check_exactly_once,
    delayed_jobs,
    dispatched_ids,
    execute,
    interval_spec,
    job_states,
    now,
)
from tests.integration.test_scheduler_processes import GUARD, wait_until

OUTAGE = 3.0  # seconds the server stays down


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_the_scheduler_rides_out_a_postgresql_restart(
        throwaway_cluster: Cluster, mode: StopMode, redis_url: str, redis_client: Redis, redis_prefix: str) -> None:
    url = throwaway_cluster.url("gnomon")
    created = await add_schedules(url, [interval_spec(f"every-second-{i}") for i in range(20)])
    before = delayed_jobs([now() + timedelta(seconds=0.5 + i / 100) for i in range(100)])
    await add_jobs(url, before)
    with gnomon("scheduler", env=gnomon_env(url, redis_url, prefix=redis_prefix)) as scheduler:
        scheduler.wait_for_log("ready")
        await wait_until(lambda: all_queued(url, [j.id for j in before]), "the jobs of before the outage queued")

        throwaway_cluster.stop(mode)
        await asyncio.sleep(OUTAGE)
        assert scheduler.alive()
        throwaway_cluster.start()

        after = delayed_jobs([now() + timedelta(seconds=1 + i / 100) for i in range(100)])
        await add_jobs(url, after)
        await execute(url, "SELECT pg_notify('gnomon_wakeup', '')")
        ids = [j.id for j in before + after]
        await wait_until(lambda: all_queued(url, ids), "every job queued after the restart", GUARD)

        async def dispatched() -> bool:
            return set(ids) <= set(await dispatched_ids(redis_client, redis_prefix))

        await wait_until(dispatched, "every job dispatched")
        fired_before = await check_exactly_once(url, created)

        async def fires_again() -> bool:
            fired = await check_exactly_once(url, created)
            return all(fired[s.id] > fired_before[s.id] for s in created)

        await wait_until(fires_again, "every schedule firing again after the restart")
        listener_failures = scheduler.log.count("wake-up listener failed")
        await asyncio.sleep(3)  # several waits on the wake-up channel
        assert scheduler.log.count("wake-up listener failed") == listener_failures, "LISTEN did not recover"
        assert scheduler.terminate() == 0
        log = scheduler.log
    assert "scheduler tick failed" in log
    print(log[-2000:])


async def all_queued(url: str, ids: list[str]) -> bool:
    return set((await job_states(url, ids)).values()) == {"queued"}
