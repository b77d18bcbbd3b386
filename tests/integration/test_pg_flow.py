"""Flow control on PostgreSQL under real concurrency: many connections claim, finish and submit jobs of the same
keys and queue at once. The number of running jobs per key and in the limited queue, sampled from the database
throughout, never exceeds the limit; and every job ends without the scheduler's sweep, so no wake-up was lost
between a holder (claim, submit) and a waker (finish) - the advisory lock protocol of adapters/postgres/flow_sql.py."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from adapters.memory.dispatcher import InMemoryDispatcher
from adapters.postgres import flow_sql, sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import Pool, connection, create_pool, open_pool
from adapters.postgres.queue_settings import PgQueueSettingsRepository
from application.identity import new_id
from application.ports import Finished
from application.submit_jobs import dispatch
from domain.flow import QueueSettings
from domain.job import Job, JobSpec
from tests.contracts.repositories import make_job
from tests.integration.conftest import OpenPool

KEYS = {"k1": 1, "k2": 2, "k3": 3}
QUEUE_LIMIT = 4
WORKERS = 8
LEASE = 60.0


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def pools(open_pools: OpenPool) -> list[Pool]:
    return [await open_pools() for _ in range(WORKERS + 2)]


def jobs_of(key: str, n: int, queue: str = "default") -> list[Job]:
    return [make_job(now(), task="noop", queue=queue, concurrency_key=key, concurrency_limit=KEYS[key])
            for _ in range(n)]


async def work(jobs: PgJobRepository, dispatcher: InMemoryDispatcher, queues: list[str], done: asyncio.Event,
               limited: tuple[str, ...]) -> None:
    while not done.is_set():
        ids = await dispatcher.pop(queues, limit=3, timeout=0.05)
        if not ids:
            continue
        claimed = await jobs.claim(ids, worker_id="w", now=now(), lease_seconds=LEASE, limited=limited)
        await asyncio.sleep(random.uniform(0, 0.003))
        outcomes = [Finished(job=new, run=run) for new, run in (j.succeed(token=j.version, now=now()) for j in claimed)]
        if outcomes:
            recorded = await jobs.finish(outcomes, now=now(), limited=limited)
            assert recorded.refused == []
            await dispatch(dispatcher, recorded.woken)


async def sample(pool: Pool, done: asyncio.Event, seen: list[dict[str, int]]) -> None:
    query = ("SELECT coalesce(concurrency_key, '-') AS key, queue, count(*) AS n FROM jobs WHERE state = 'running'"
             " GROUP BY 1, 2")
    while not done.is_set():
        async with connection(pool) as conn:
            rows = await (await conn.execute(query)).fetchall()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["key"]] = counts.get(row["key"], 0) + row["n"]
            counts["queue:" + row["queue"]] = counts.get("queue:" + row["queue"], 0) + row["n"]
        seen.append(counts)
        await asyncio.sleep(0.002)


async def until_all_succeeded(jobs: PgJobRepository, ids: list[str], timeout: float) -> None:
    end = asyncio.get_running_loop().time() + timeout
    pending = list(ids)
    while pending:
        assert asyncio.get_running_loop().time() < end, f"{len(pending)} jobs never ran (a lost wake-up?)"
        pending = [i for i in pending if (await jobs.get(i)).state.value != "succeeded"]
        await asyncio.sleep(0.05)


async def test_limits_hold_and_no_wake_up_is_lost_under_concurrent_claims_finishes_and_submits(
        pools: list[Pool]) -> None:
    await PgQueueSettingsRepository(pools[0]).upsert(QueueSettings(queue="capped", max_running=QUEUE_LIMIT,
                                                                   updated_at=now()))
    dispatcher = InMemoryDispatcher()
    repos = [PgJobRepository(pool) for pool in pools]
    first = [job for key in KEYS for job in jobs_of(key, 40)] + jobs_of("k3", 30, queue="capped")
    submitted = [s.job for s in await repos[0].add(first)]
    await dispatch(dispatcher, submitted)
    done, seen = asyncio.Event(), []
    workers = [asyncio.create_task(work(repos[i], dispatcher, ["default", "capped"], done, ("capped",)))
               for i in range(WORKERS)]
    sampler = asyncio.create_task(sample(pools[WORKERS + 1], done, seen))
    later: list[str] = []
    for _ in range(20):  # submits race the finishes of the same keys (gating at submit vs the wake-up)
        batch = [s.job for s in await repos[WORKERS].add([*jobs_of("k1", 2), *jobs_of("k2", 2)])]
        await dispatch(dispatcher, batch)
        later += [j.id for j in batch]
        await asyncio.sleep(0.01)
    try:
        await until_all_succeeded(repos[0], [j.id for j in submitted] + later, timeout=45)
    finally:
        done.set()
        await asyncio.gather(*workers, sampler)
    worst = {name: max(counts.get(name, 0) for counts in seen) for name in [*KEYS, "queue:capped"]}
    print(f"\nmost running at once, sampled {len(seen)} times: {worst}")
    assert all(worst[key] <= limit for key, limit in KEYS.items()), worst
    assert worst["queue:capped"] <= QUEUE_LIMIT, worst
    assert worst["k3"] == KEYS["k3"]  # the limit was reached, so the test could have caught an excess


async def test_a_limited_queue_of_unkeyed_jobs_obeys_max_running_across_connections(pools: list[Pool]) -> None:
    await PgQueueSettingsRepository(pools[0]).upsert(QueueSettings(queue="capped", max_running=2, updated_at=now()))
    repos = [PgJobRepository(pool) for pool in pools[:WORKERS]]
    made = [make_job(now(), queue="capped") for _ in range(60)]
    await repos[0].add(made)
    ids = [j.id for j in made]
    # Disjoint ids per connection: no row is wanted twice, so only the queue's lock keeps them from each starting 2.
    claims = await asyncio.gather(*(repo.claim(ids[i::WORKERS], worker_id=f"w{i}", now=now(), lease_seconds=LEASE,
                                               limited=("capped",)) for i, repo in enumerate(repos)))
    assert sum(len(c) for c in claims) == 2
    async with connection(pools[0]) as conn:
        rows = await (await conn.execute("SELECT state, held_for, count(*) AS n FROM jobs GROUP BY 1, 2")).fetchall()
    assert {(row["state"], row["held_for"]): row["n"] for row in rows} == {("running", None): 2,
                                                                           ("queued", "queue"): 58}


async def test_a_job_spec_key_limit_is_per_job_and_jobs_of_other_keys_pass(pools: list[Pool]) -> None:
    jobs = PgJobRepository(pools[0])
    spec = JobSpec(task="noop", concurrency_key="solo")
    solo = [Job.create(new_id(now()), spec, now=now()) for _ in range(3)]
    others = jobs_of("k3", 3)
    out = [s.job for s in await jobs.add([*solo, *others])]
    assert [j.held for j in out] == [False, True, True, False, False, False]


async def test_a_claim_that_holds_and_a_finish_that_frees_never_strand_the_held_job(pools: list[Pool]) -> None:
    """The race a lost wake-up needs: the claim decides to hold J (its key is full) while the finish that frees the
    key looks for held jobs. Whatever the interleaving, J ends running or dispatched, never held on an empty key."""
    claimer, finisher = PgJobRepository(pools[0]), PgJobRepository(pools[1])
    outcomes: dict[str, int] = {}
    for _ in range(150):
        running, waiting = jobs_of("k1", 2)
        await claimer.add([running, waiting])  # `waiting` is held at submit: k1 is busy
        [started] = await claimer.claim([running.id], worker_id="w", now=now(), lease_seconds=LEASE)
        done = Finished(job=started.succeed(token=started.version, now=now())[0], run=None)
        await asyncio.sleep(random.uniform(0, 0.002))
        claimed, recorded = await asyncio.gather(
            claimer.claim([waiting.id], worker_id="w", now=now(), lease_seconds=LEASE),  # a duplicate id popped
            finisher.finish([done], now=now()))
        final = await claimer.get(waiting.id)
        fate = "started" if claimed else "woken" if recorded.woken else "held"
        outcomes[fate] = outcomes.get(fate, 0) + 1
        assert claimed or not final.held, f"job {waiting.id} held while its key has nothing in flight"
        if claimed:
            await claimer.finish([Finished(job=claimed[0].succeed(token=claimed[0].version, now=now())[0],
                                           run=None)], now=now())
        else:
            await claimer.save(final.cancel(now=now())[0])
    print(f"\nfates of the contended job: {outcomes}")


class Plans:
    """The executed plans of what a connection runs, statements inside functions included (auto_explain with nested
    statements, its log lines sent to this client as notices)."""

    def __init__(self) -> None:
        self.found: list[dict[str, Any]] = []

    def __call__(self, diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        if "plan:" in message:
            self.found.append(json.loads(message.split("plan:", 1)[1])["Plan"])

    def take(self) -> list[dict[str, Any]]:
        found, self.found = self.found, []
        return found


async def _explaining(conn: psycopg.AsyncConnection[Any], generic: bool) -> None:
    await conn.execute("LOAD 'auto_explain'")
    for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_nested_statements = on",
                    "auto_explain.log_analyze = on", "auto_explain.log_timing = off",
                    "auto_explain.log_format = json", "client_min_messages = log"):
        await conn.execute("SET " + setting)
    if generic:  # as the scheduler's sessions plan: once, for any values (functions' statements included)
        await conn.execute(sql.GENERIC_PLANS)


def _read(node: dict[str, Any]) -> int:
    """Rows a plan node and its children read from tables and indexes: output plus rows filters removed, per loop."""
    own = 0
    if "Scan" in node["Node Type"] and "Function" not in node["Node Type"] and "CTE" not in node["Node Type"]:
        removed = node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
        own = (node["Actual Rows"] + removed) * node.get("Actual Loops", 1)
    return own + sum(_read(child) for child in node.get("Plans", []))


@pytest.mark.parametrize("generic", [False, True], ids=["custom plans", "generic plans"])
async def test_flow_statements_read_what_they_handle_not_what_waits(pg_url: str, generic: bool) -> None:
    """With 20,000 jobs queued and 6,000 held, the sweep's look for held keys and queues, the wake, the gated claim
    and the in-flight count read rows in proportion to the keys and jobs at hand, not to the backlog, statements
    inside their functions included, in custom and in generic plans (the scheduler's sessions use generic plans)."""
    pool = create_pool(pg_url, max_size=1)
    await open_pool(pool)
    jobs, keys = PgJobRepository(pool), [f"tenant-{i}" for i in range(50)]
    try:
        await jobs.add([make_job(now()) for _ in range(20_000)])
        await jobs.add([make_job(now(), concurrency_key=keys[i % 50], concurrency_limit=2) for i in range(5000)])
        await PgQueueSettingsRepository(pool).upsert(QueueSettings(queue="p", paused=True, updated_at=now()))
        paused = [make_job(now(), queue="p") for _ in range(1000)]
        await jobs.add(paused)
        await jobs.claim([j.id for j in paused], worker_id="w", now=now(), lease_seconds=LEASE, limited=("p",))
    finally:
        await pool.close()
    some = [uuid.UUID(j.id) for j in paused[:64]]
    statements = [  # name, statement, parameters, rows it handles
        ("held keys and queues", flow_sql.HELD_NAMES, {"limit": 5000}, 51),
        ("wake", flow_sql.WAKE, {"now": now(), "keys": keys, "queues": ["p"], "limit": 5000,
                                 "held_before": now()}, 50 * 4),
        ("in flight", flow_sql.IN_FLIGHT, {"now": now(), "keys": keys, "deciding": [uuid.UUID(int=1)]}, 50 * 2),
        ("gated claim", flow_sql.CLAIM_GATED, {"ids": some, "now": now(), "worker": "w", "limited": ["p"],
                                               "expires_at": now()}, 64 * 3),
    ]
    read, _ = await rows_read(pg_url, statements, generic)
    assert all(rows <= 5 * handled + 50 for rows, handled in read.values()), read


Statement = tuple[str, Any, dict[str, Any], int]  # name, statement, parameters, rows it handles


async def rows_read(pg_url: str, statements: list[Statement], generic: bool,
                    ) -> tuple[dict[str, tuple[int, int]], dict[str, list[Any]]]:
    """Run each statement once (rolled back) on freshly analysed statistics, with auto_explain on: per statement,
    the rows its plans read beside the rows it handles, and the rows it returned."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("ANALYZE jobs")
        await _explaining(conn, generic)
        plans = Plans()
        conn.add_notice_handler(plans)
        read, returned = {}, {}
        for name, query, params, handled in statements:
            async with conn.transaction(force_rollback=True):
                cur = await conn.execute(query, params)
                returned[name] = await cur.fetchall() if cur.description else []
            found = plans.take()  # some notices come in with the next reply: read them after the rollback
            assert found, f"no plan of {name}"
            read[name] = (sum(_read(plan) for plan in found), handled)
    print(f"\nrows read, rows handled: {read}")
    return read, returned
