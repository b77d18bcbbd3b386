"""Faults under real worker and scheduler processes (issue 4): Redis flushed mid-dispatch, Redis and PostgreSQL
restarted mid-run. Nothing is lost: every job still ends `succeeded`, and the processes ride the outages out."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from domain.job import State
from tests.integration.cluster import Cluster, free_port
from tests.integration.processes import GnomonProcess, gnomon, gnomon_env
from tests.integration.stack import Client, client, new_prefix, spec

# FLUSHDB wipes a whole database: this test owns DB 6 of the test Redis (the other tests use prefixes in
# DB 0; DBs 8-15 belong to the benchmark harness).
FLUSHABLE_DB = 6
RECOVERY = {"dispatch_timeout_seconds": 2, "lease_seconds": 2, "heartbeat_seconds": 0.5}


@pytest.fixture
def flushable_redis_url(redis_url: str) -> str:
    """The test Redis, database FLUSHABLE_DB, which no other test uses."""
    base, _, _db = redis_url.rpartition("/")
    return f"{base}/{FLUSHABLE_DB}"


class PrivateRedis:
    """A redis-server of one test, with no persistence: a restart comes back empty, as after a crash."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gnomon-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < end, "private redis-server never answered"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.dir, ignore_errors=True)


async def _outcome_counts(jobs: Client) -> dict[str, int]:
    async with jobs.runtime.adapters.pool().connection() as conn:
        rows = await (await conn.execute("SELECT outcome, count(*) AS n FROM runs GROUP BY outcome")).fetchall()
    return {row["outcome"]: row["n"] for row in rows}


def _stop_cleanly(*processes: GnomonProcess) -> None:
    for process in processes:
        assert process.alive(), f"gnomon {process.args} exited during the fault:\n{process.log[-3000:]}"
        assert process.terminate(timeout=20) == 0


async def test_flushdb_while_2000_delayed_jobs_are_dispatched_loses_none(
        pg_url: str, flushable_redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, flushable_redis_url, prefix=prefix, **RECOVERY)
    flusher = redis.Redis.from_url(flushable_redis_url, socket_timeout=5)
    async with client(pg_url, flushable_redis_url, prefix) as jobs:
        with gnomon("scheduler", env=env) as scheduler, \
                gnomon("worker", "--concurrency", "8", env=env) as one, \
                gnomon("worker", "--concurrency", "8", env=env) as two:
            for process in (scheduler, one, two):
                process.wait_for_log("ready")
            start = datetime.now(UTC) + timedelta(seconds=1.5)  # delayed: the scheduler promotes and pushes them
            await jobs.submit(*(spec("sleep", payload={"seconds": 0.02}, run_at=start + timedelta(milliseconds=i))
                                for i in range(2000)))
            hits = 0
            for _ in range(10):  # due over 2 s from 1.5 s on: flush every 0.4 s while they are dispatched
                await asyncio.sleep(0.4)
                hits += flusher.dbsize() > 0
                flusher.flushdb()
            counts = await jobs.until_all(State.SUCCEEDED, 2000, timeout=25)
            redispatched = sum(int(n) for n in re.findall(r"redispatched=(\d+)", scheduler.log))
            _stop_cleanly(scheduler, one, two)
        outcomes = await _outcome_counts(jobs)
    flusher.close()
    assert counts == {"succeeded": 2000}
    assert outcomes == {"succeeded": 2000}  # each ran once: a re-sent id of a started job is skipped
    assert hits > 0, "no FLUSHDB found ids waiting: the test did not exercise recovery"
    assert redispatched > 0, "the scheduler never re-sent a dispatch"


async def test_a_redis_restart_loses_nothing_and_stops_no_process(pg_url: str, private_redis: PrivateRedis) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, private_redis.url, prefix=prefix, **RECOVERY)
    async with client(pg_url, private_redis.url, prefix) as jobs:
        with gnomon("scheduler", env=env) as scheduler, gnomon("worker", env=env) as worker:
            scheduler.wait_for_log("ready")
            worker.wait_for_log("ready")
            now = datetime.now(UTC)
            before = await jobs.submit(*(spec("sleep", payload={"seconds": 0.5}, max_attempts=5,
                                              run_at=now + timedelta(seconds=i * 0.1)) for i in range(30)))
            await jobs.until(before[0], State.SUCCEEDED)
            private_redis.kill()
            during = await jobs.submit(*(spec("noop", max_attempts=5) for _ in range(20)))  # dispatch fails
            worker.wait_for_log("failed (")
            await asyncio.sleep(1)
            private_redis.start()  # empty: every id that waited in it is gone
            counts = await jobs.until_all(State.SUCCEEDED, len(before) + len(during), timeout=25)
            _stop_cleanly(scheduler, worker)
    assert counts == {"succeeded": 50}


async def test_a_postgresql_crash_and_restart_mid_run_loses_nothing(throwaway_cluster: Cluster, redis_url: str) -> None:
    prefix = new_prefix()
    url = throwaway_cluster.url("gnomon")
    env = gnomon_env(url, redis_url, prefix=prefix, **RECOVERY)
    async with client(url, redis_url, prefix) as jobs:
        with gnomon("scheduler", env=env) as scheduler, gnomon("worker", env=env) as worker:
            scheduler.wait_for_log("ready")
            worker.wait_for_log("ready")
            now = datetime.now(UTC)
            ids = await jobs.submit(*(spec("sleep", payload={"seconds": 0.3}, max_attempts=10,
                                           run_at=now + timedelta(seconds=i * 0.02)) for i in range(150)))
            await jobs.until(ids[10], State.SUCCEEDED)
            throwaway_cluster.stop("immediate")  # a crash: connections die mid-statement
            worker.wait_for_log("failed (")
            await asyncio.sleep(1)
            throwaway_cluster.start()
            counts = await jobs.until_all(State.SUCCEEDED, len(ids), timeout=25)
            _stop_cleanly(scheduler, worker)
    assert counts == {"succeeded": 150}
