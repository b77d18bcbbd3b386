"""Fault injection against the real decoupled stack (issue 5): jobs flow through 1 API, 2 schedulers and
2 workers, all separate processes, while a driver kills -9 a random scheduler or worker every few seconds
and restarts it, flushes the Redis database once, and restarts PostgreSQL once (a throwaway cluster).

Leases are short (6 s, heartbeat 0.5 s) and a lost dispatch is re-sent after 2 s, so recovery fits the run.
A lease outlives the PostgreSQL restart (about 1-3 s here): a live worker that cannot heartbeat while the database
is down keeps its jobs, so the only duplicate executions are those of jobs whose worker was killed.
The cluster keeps what it acknowledged through the crash (cluster.py commits synchronously: with
synchronous_commit = off it lost outcome batches acknowledged milliseconds before the crash, whose jobs were then
rescued as `lost` from a live worker in about one run in four).
The suite stops by itself: every phase has a deadline, the whole well under three minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest_asyncio
import redis.asyncio as aioredis

from tests.integration import nasty
from tests.integration.cluster import Cluster, free_port
from tests.integration.faults import (
    FINISHED_WITHOUT_RUNS,
    ORPHAN_LEDGER,
    RUNS,
    STORED_MARKS,
    TERMINAL,
    TWICE_IN_JOBS,
    TWICE_IN_LEDGER,
    UNACCOUNTED_JOBS,
    UNACCOUNTED_SCHEDULES,
    UNRECORDED_FIRINGS,
    Fleet,
    Load,
    accepted_ids,
    fetch,
    fuzz_api,
    har_entries,
    send_all,
    until_terminal,
)
from tests.integration.http_stack import TOKEN, redis_base_url
from tests.integration.processes import gnomon_env
from tests.integration.stack import new_prefix

JOBS = 20_000
BATCH = 500
SEED = 5
REDIS_DB = 7  # a Redis database of this suite alone: it gets flushed
SUITE_SECONDS = 175.0  # the hard bound of the whole scenario, startup included
FAST = {"lease_seconds": 6, "heartbeat_seconds": 0.5, "dispatch_timeout_seconds": 2, "shutdown_grace_seconds": 2}


def own_redis_db(base: str, db: int) -> str:
    head, _, _ = base.rpartition("/")
    return f"{head}/{db}" if "://" in head else f"{base.rstrip('/')}/{db}"


@pytest_asyncio.fixture
async def flushable_redis() -> AsyncIterator[str]:
    url = own_redis_db(redis_base_url(), REDIS_DB)
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
        yield url
    finally:
        await client.flushdb()
        await client.aclose()


class Chaos:
    """Every 2-4 s: kill -9 a random scheduler or worker and restart it; once: FLUSHDB; once: restart
    PostgreSQL (an immediate stop, i.e. a crash, then a start). Runs until told to stop and both one-offs
    are done."""

    def __init__(self, fleet: Fleet, cluster: Cluster, redis_url: str, seed: int) -> None:
        self.fleet = fleet
        self.cluster = cluster
        self.redis_url = redis_url
        self.rng = random.Random(seed)
        self.flushed = 0
        self.pg_restarts = 0
        self.timeline: list[str] = []  # "12.3s kill worker.1", for the printed figures

    async def run(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        victims = [name for name in self.fleet.roles if name != "api"]
        while not (stop.is_set() and self.flushed and self.pg_restarts):
            await asyncio.sleep(self.rng.uniform(2, 4))
            elapsed = time.monotonic() - start
            if not self.flushed and elapsed > 6:
                await self._flush()
                self.timeline.append(f"{elapsed:.0f}s FLUSHDB")
            elif not self.pg_restarts and elapsed > 15:
                await asyncio.to_thread(self.cluster.restart, "immediate")
                self.pg_restarts += 1
                self.timeline.append(f"{elapsed:.0f}-{time.monotonic() - start:.0f}s PostgreSQL restart")
            else:
                victim = self.rng.choice(victims)
                await asyncio.to_thread(self.fleet.kill_and_restart, victim)
                self.timeline.append(f"{elapsed:.0f}s kill {victim}")

    async def _flush(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()
        self.flushed += 1


def audit_runs(runs: list[dict[str, Any]], fleet: Fleet) -> dict[str, Any]:
    """Extra executions are `lost` runs; each must come from a worker we killed. Returns the figures."""
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_job[run["job_id"]].append(run)
    problems = []
    for job_id, history in by_job.items():
        if [r["attempt"] for r in history] != list(range(1, len(history) + 1)):
            problems.append(f"{job_id}: attempts {[r['attempt'] for r in history]}")
        allowed = {"failed", "lost"} if history[0]["task"] == "fail" else {"lost"}
        last, state = history[-1]["outcome"], history[0]["state"]
        if any(r["outcome"] not in allowed for r in history[:-1]) or len(history) != history[0]["job_attempt"] \
                or (state == "succeeded") != (last == "succeeded"):
            problems.append(f"{job_id} ({history[0]['task']}, {state}, attempt {history[0]['job_attempt']}): "
                            f"runs {[(r['attempt'], r['outcome'], r['worker_id']) for r in history]}")
    lost = [r for r in runs if r["outcome"] == "lost"]
    by_survivors = [r for r in lost if not fleet.killed(r["worker_id"])]
    duplicates = {r["job_id"] for r in lost if len(by_job[r["job_id"]]) > 1}
    return {"problems": problems, "lost_runs": len(lost), "lost_by_survivors": by_survivors,
            "duplicates": len(duplicates)}


async def test_jobs_survive_kills_a_redis_flush_and_a_postgres_restart(throwaway_cluster: Cluster,
                                                                       flushable_redis: str) -> None:
    deadline = time.monotonic() + SUITE_SECONDS
    url = throwaway_cluster.url("gnomon")
    port = free_port()
    env = gnomon_env(url, flushable_redis, prefix=f"faults-{secrets.token_hex(3)}", api_tokens=TOKEN, port=port,
                     **FAST)
    worker = ["worker", "--concurrency", "32"]
    fleet = Fleet(env, {"api": ["api"], "scheduler.1": ["scheduler"], "scheduler.2": ["scheduler"],
                        "worker.1": worker, "worker.2": worker})
    try:
        await asyncio.to_thread(fleet.start)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            schedules = [await _schedule(api, f"every-{s}s", s) for s in (1, 2, 3)]
            load, chaos = Load(api, JOBS, BATCH, SEED), Chaos(fleet, throwaway_cluster, flushable_redis, SEED)
            stop = asyncio.Event()
            chaos_task = asyncio.create_task(chaos.run(stop))
            started = time.monotonic()
            await load.run(spacing=0.6, deadline=deadline)
            chaos.timeline.append(f"{time.monotonic() - started:.0f}s all {JOBS} jobs submitted")
            await asyncio.sleep(10)  # faults go on while the delayed jobs come due
            stop.set()
            await asyncio.wait_for(chaos_task, timeout=max(deadline - time.monotonic(), 1))
            for name in schedules:
                await _pause(api, name, deadline)
        final = await until_terminal(url, deadline)
        assert not fleet.crashed(), fleet.crashed()
        await _audit(url, load, chaos, fleet, final)
    finally:
        fleet.close()


def test_the_cluster_keeps_every_acknowledged_commit_through_a_crash(throwaway_cluster: Cluster) -> None:
    """What the audit above relies on: a commit that the server acknowledged survives its crash (an immediate
    stop). It guards the throwaway cluster's settings (cluster.py: synchronous_commit = on; with it off, 29-62 of
    500-607 acknowledged commits were lost in each of 5 tries)."""
    url = throwaway_cluster.url("gnomon")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE crash_probe (n bigint NOT NULL)")
        conn.execute("INSERT INTO crash_probe VALUES (0)")
    acknowledged = 0
    going = threading.Event()

    def commit_until_the_crash() -> None:
        nonlocal acknowledged
        with psycopg.connect(url, autocommit=True) as conn, contextlib.suppress(psycopg.OperationalError):
            while True:
                conn.execute("UPDATE crash_probe SET n = n + 1")
                acknowledged += 1
                if acknowledged == 500:
                    going.set()

    writer = threading.Thread(target=commit_until_the_crash, daemon=True)
    writer.start()
    assert going.wait(60), "the writer never committed"
    throwaway_cluster.stop("immediate")  # while the writer commits
    writer.join(30)
    throwaway_cluster.start()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT n FROM crash_probe").fetchone()
    assert row is not None
    # The last commit may have been made and its answer lost with the connection: one more, never one less.
    assert row[0] - acknowledged in (0, 1), f"acknowledged {acknowledged} commits, {row[0]} survived the crash"


async def _schedule(api: httpx.AsyncClient, name: str, seconds: int) -> str:
    response = await api.post("/v1/schedules", json={"name": name, "interval_seconds": seconds,
                                                     "job": {"task": "noop", "payload": {"schedule": name}}})
    assert response.status_code == 201, response.text
    return name


async def _pause(api: httpx.AsyncClient, name: str, deadline: float) -> None:
    while (await api.post(f"/v1/schedules/{name}/pause")).status_code != 200:
        assert time.monotonic() < deadline, f"could not pause {name}"
        await asyncio.sleep(0.5)


async def _audit(url: str, load: Load, chaos: Chaos, fleet: Fleet, final: dict[str, int]) -> None:
    stored = {row["id"]: row["state"] for row in await fetch(url, "SELECT id::text AS id, state FROM jobs")}
    missing = [i for i in load.ids if i not in stored]
    assert len(set(load.ids)) == JOBS and not missing, f"{len(missing)} submitted jobs are missing: {missing[:5]}"
    assert all(stored[i] in TERMINAL for i in load.ids)
    assert await fetch(url, TWICE_IN_JOBS) == []
    assert await fetch(url, TWICE_IN_LEDGER) == []
    assert await fetch(url, ORPHAN_LEDGER) == []
    assert await fetch(url, UNRECORDED_FIRINGS) == []
    assert await fetch(url, FINISHED_WITHOUT_RUNS) == []
    fired = len(stored) - JOBS
    figures = audit_runs(await fetch(url, RUNS), fleet)
    print(f"\nfault suite: kills={sum(fleet.kills.values())} ({dict(fleet.kills)}), restarts="
          f"{sum(fleet.kills.values())} processes + {chaos.pg_restarts} PostgreSQL, redis_flushes={chaos.flushed}, "
          f"jobs={len(stored)} (submitted {JOBS}: {dict(load.kinds)}; schedule-fired {fired}), states={final}, "
          f"lost=0, duplicates={figures['duplicates']} (lost runs {figures['lost_runs']}, "
          f"of live workers {len(figures['lost_by_survivors'])}), refused_batches={load.refused}\n"
          f"timeline: {', '.join(chaos.timeline)}")
    assert figures["problems"] == [], figures["problems"][:20]
    assert figures["lost_by_survivors"] == [], figures["lost_by_survivors"][:20]


FUZZ_EXAMPLES = 10  # per operation and phase: bounded, the whole fuzz run takes well under a minute
SPEC_FIELDS = ("name", "cron", "interval_seconds", "timezone", "job", "misfire_policy", "misfire_grace_seconds",
               "max_catchup", "overlap_policy", "jitter_seconds", "start_at", "end_at", "max_runs", "paused")


async def test_malformed_requests_flood_the_api_while_jobs_run(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + SUITE_SECONDS
    port = free_port()
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, api_tokens=TOKEN, port=port, **FAST)
    fleet = Fleet(env, {"api": ["api"], "scheduler.1": ["scheduler"], "worker.1": ["worker"]})
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(fleet.start)
        async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            ours = await _background_work(api)
            target = await _created(api, "/v1/schedules", {"name": f"target-{prefix}", "interval_seconds": 1,
                                                            "job": {"task": "noop"}})
            before = (await api.get(f"/v1/schedules/{target}")).json()
            har = tmp_path / "fuzz.har"
            fuzzing = asyncio.create_task(asyncio.to_thread(
                fuzz_api, base, TOKEN, har, FUZZ_EXAMPLES, SEED, max(deadline - time.monotonic(), 10)))
            answers, taken = await send_all(api, nasty.requests(target, 0))
            console = await fuzzing
            after = (await api.get(f"/v1/schedules/{target}")).json()
            await _pause(api, target, deadline)
        assert not fleet.crashed(), fleet.crashed()
        entries = har_entries(har)
        print(f"\nAPI flood: {len(entries)} schemathesis requests, {len(answers)} hand-written; statuses "
              f"{sorted(Counter(e['status'] for e in entries).items())} / "
              f"{Counter(str(a) for a in answers.values()).most_common()}")
        print(f"hand-written requests accepted as valid: {sorted(m for m, a in answers.items() if a in (200, 201))}")
        assert entries, console[-3000:]
        assert [e for e in entries if e["status"] >= 500] == [], console[-3000:]
        assert {m: a for m, a in answers.items() if not isinstance(a, int) or a >= 500} == {}
        rejected = {m for m, a in answers.items() if isinstance(a, int) and 400 <= a < 500}
        stored = {row["mark"] for row in await fetch(pg_url, STORED_MARKS)}
        assert {m for m in rejected if any(s.startswith(m) for s in stored)} == set()
        assert {k: (before[k], after[k]) for k in SPEC_FIELDS if before[k] != after[k]} == {}
        known = [*ours, target, *accepted_ids(entries), *taken]
        assert await fetch(pg_url, UNACCOUNTED_SCHEDULES, {"ids": known}) == []
        assert await fetch(pg_url, UNACCOUNTED_JOBS, {"ids": known}) == []
    finally:
        fleet.close()


async def _created(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    response = await api.post(path, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _background_work(api: httpx.AsyncClient) -> list[str]:
    """What runs during the flood: a 1 s schedule and 2,000 jobs (some delayed, failing or slow); their ids."""
    load = Load(api, 2000, 1000, SEED)
    await load.run(spacing=0, deadline=time.monotonic() + 60)
    schedule = await _created(api, "/v1/schedules", {"name": f"background-{secrets.token_hex(3)}",
                                                     "interval_seconds": 1, "job": {"task": "noop"}})
    return [*load.ids, schedule]
