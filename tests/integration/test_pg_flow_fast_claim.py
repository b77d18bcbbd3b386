"""The fast claims of V006 and V011 (docs/design.md, "The claim, hard and cheap"): far below its max_running, a claim
of the queue takes its lock shared (plus one stripe of it), so claims and finishes of the queue do not wait for it;
near the limit the claim takes the lock exclusively and counts, as before. Whatever the path, the queue never has
more than max_running jobs running. Keys likewise (V011): far below their limits, shared plus one key stripe. A
claim that waits for a lock here fails at once (lock_timeout): the tests tell "waits" from "does not wait" without
timing anything."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from adapters.postgres import flow, flow_sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import Pool, create_pool, open_pool
from adapters.postgres.queue_settings import PgQueueSettingsRepository
from domain.flow import QueueSettings
from tests.contracts.repositories import make_job
from tests.integration.conftest import OpenPool
from tests.integration.test_pg_flow import rows_read

CONNECTIONS = 16


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def connections(open_pools: OpenPool) -> list[Pool]:
    """CONNECTIONS pools of one connection each, racing."""
    return [await open_pools(max_size=1) for _ in range(CONNECTIONS)]


async def queue_of(pool: Pool, n: int, max_running: int, queue: str = "capped") -> list[uuid.UUID]:
    await PgQueueSettingsRepository(pool).upsert(QueueSettings(queue=queue, max_running=max_running,
                                                               updated_at=now()))
    made = [make_job(now(), queue=queue) for _ in range(n)]
    await PgJobRepository(pool).add(made)
    return [uuid.UUID(j.id) for j in made]


def claim_params(ids: list[uuid.UUID], queue: str = "capped") -> dict[str, Any]:
    return {"ids": ids, "limited": [queue], "worker": "w", "now": now(), "expires_at": now() + timedelta(minutes=5)}


async def session(pg_url: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row)
    await conn.execute("SET lock_timeout = '50ms'")
    await conn.commit()
    return conn


async def test_far_below_the_limit_a_claim_in_progress_blocks_neither_claims_nor_finishes(pool: Pool,
                                                                                        pg_url: str) -> None:
    ids = await queue_of(pool, 12, max_running=1000)
    first, second, waker = await session(pg_url), await session(pg_url), await session(pg_url)
    try:
        started = await (await first.execute(flow_sql.CLAIM_GATED, claim_params(ids[:4]))).fetchall()
        assert len(started) == 4  # and `first` keeps its transaction, with its locks, open
        also = await (await second.execute(flow_sql.CLAIM_GATED, claim_params(ids[4:8]))).fetchall()
        assert len(also) == 4
        wake = {"now": now(), "keys": [], "queues": ["capped"], "limit": 100, "held_before": None}
        assert await (await waker.execute(flow_sql.WAKE, wake)).fetchall() == []
    finally:
        for conn in (first, second, waker):
            await conn.close()


async def test_near_the_limit_a_claim_excludes_the_other_claims_and_the_finishes(pool: Pool, pg_url: str) -> None:
    ids = await queue_of(pool, 12, max_running=10)  # 10 < 2 x 8 stripes: never the fast path
    first, second, waker = await session(pg_url), await session(pg_url), await session(pg_url)
    try:
        assert len(await (await first.execute(flow_sql.CLAIM_GATED, claim_params(ids[:4]))).fetchall()) == 4
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await second.execute(flow_sql.CLAIM_GATED, claim_params(ids[4:8]))
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await waker.execute(flow_sql.WAKE, {"now": now(), "keys": [], "queues": ["capped"], "limit": 100,
                                                "held_before": None})
    finally:
        for conn in (first, second, waker):
            await conn.close()


async def test_a_batch_bigger_than_a_stripe_share_takes_the_exact_path(pool: Pool, pg_url: str) -> None:
    ids = await queue_of(pool, 80, max_running=1000)  # share: 1000 / 16 = 62 jobs per claim on the fast path
    first, second = await session(pg_url), await session(pg_url)
    try:
        assert len(await (await first.execute(flow_sql.CLAIM_GATED, claim_params(ids[:63]))).fetchall()) == 63
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await second.execute(flow_sql.CLAIM_GATED, claim_params(ids[63:65]))
    finally:
        await first.close()
        await second.close()


async def test_a_keyed_batch_of_a_small_key_limit_takes_the_exact_path_even_far_below_max_running(
        pool: Pool, pg_url: str) -> None:
    ids = await queue_of(pool, 8, max_running=1000)
    keyed = [make_job(now(), queue="capped", concurrency_key="tenant", concurrency_limit=10) for _ in range(2)]
    await PgJobRepository(pool).add(keyed)
    first, second = await session(pg_url), await session(pg_url)
    try:
        claimed = await (await first.execute(flow_sql.CLAIM_GATED,
                                             claim_params([uuid.UUID(j.id) for j in keyed]))).fetchall()
        assert len(claimed) == 2  # a key limit of 10 < 8 x 8 (V011): the exact path, the queue locked exclusively too
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await second.execute(flow_sql.CLAIM_GATED, claim_params(ids[:4]))
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("limit", [64, 160])
async def test_claims_racing_from_far_below_to_the_limit_start_exactly_max_running(
        pool: Pool, connections: list[Pool], pg_url: str, limit: int) -> None:
    """16 connections claim disjoint batches of 1 to the stripe share at once, nothing finishes: the first claims take
    the fast path, the later ones count exactly; each queue ends with max_running jobs running, the rest held."""
    for queue in ("race-1", "race-2", "race-3", "race-4"):
        started = await race(connections, await queue_of(pool, 3 * limit, max_running=limit, queue=queue), queue,
                             share=limit // 16)
        async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
            rows = await (await conn.execute("SELECT state, held_for, count(*) AS n FROM jobs WHERE queue = %s"
                                             " GROUP BY 1, 2", [queue])).fetchall()
        assert started == limit
        assert {(row["state"], row["held_for"]): row["n"] for row in rows} == {("running", None): limit,
                                                                               ("queued", "queue"): 2 * limit}


async def race(pools: list[Pool], ids: list[uuid.UUID], queue: str, share: int) -> int:
    pending = [str(i) for i in ids]
    random.shuffle(pending)

    async def claimer(repo: PgJobRepository) -> int:
        started = 0
        while pending:
            batch = [pending.pop() for _ in range(min(len(pending), random.randint(1, share)))]
            started += len(await repo.claim(batch, worker_id="w", now=now(), lease_seconds=300, limited=(queue,)))
        return started

    return sum(await asyncio.gather(*(claimer(PgJobRepository(made)) for made in pools)))


async def test_a_lost_workers_slot_frees_when_its_lease_expires_on_the_fast_path(pool: Pool, pg_url: str) -> None:
    ids = await queue_of(pool, 40, max_running=32)  # share 2: fast while at most 16 run
    jobs = PgJobRepository(pool)
    past = now() - timedelta(minutes=1)
    lost = [str(i) for i in ids[:16]]
    for i in range(0, 16, 2):  # leases of 1 s taken a minute ago: expired, never rescued
        assert len(await jobs.claim(lost[i:i + 2], worker_id="lost", now=past, lease_seconds=1,
                                    limited=("capped",))) == 2
    live = [str(i) for i in ids[16:]]
    started = [job for i in range(0, 24, 2)
               for job in await jobs.claim(live[i:i + 2], worker_id="w", now=now(), lease_seconds=300,
                                           limited=("capped",))]
    assert len(started) == 24  # 16 expired leases count for nothing: 24 < 32


@pytest.mark.parametrize("generic", [False, True], ids=["custom plans", "generic plans"])
async def test_the_fast_claim_and_an_idle_wake_read_what_they_handle_not_the_backlog(pool: Pool, pg_url: str,
                                                                                    generic: bool) -> None:
    """With 20,000 jobs queued and 200 running in a queue limited to 100,000, a fast claim of 64 reads about its 64
    jobs and the running ones it counts, and a wake that finds nothing held reads next to nothing."""
    ids = await queue_of(pool, 20_264, max_running=100_000)
    await PgJobRepository(pool).claim([str(i) for i in ids[:200]], worker_id="w", now=now(), lease_seconds=300,
                                      limited=("capped",))
    statements = [  # name, statement, parameters, rows it handles
        ("fast claim", flow_sql.CLAIM_GATED, claim_params(ids[200:264]), 64 + 200),
        ("idle wake", flow_sql.WAKE, {"now": now(), "keys": ["k1", "k2"], "queues": ["capped"], "limit": 100,
                                      "held_before": None}, 3),
    ]
    read, returned = await rows_read(pg_url, statements, generic)
    assert len(returned["fast claim"]) == 64
    assert all(rows <= 5 * handled + 50 for rows, handled in read.values()), read


# Keyed batches (V011): far below their keys' limits (running + 8 stripes x 8 <= the smallest limit among a key's
# candidates, at most 8 candidates a key), a claim locks its keys shared plus one key stripe and starts its batch;
# otherwise it takes the exact path, its keys locked exclusively.

RUN = ("UPDATE jobs SET state = 'running', attempt = 1, version = version + 1, started_at = %(now)s,"
       " lease_worker = 'w', lease_token = version + 1, lease_expires_at = %(expires)s WHERE id = ANY(%(ids)s)")


async def keyed(pool: Pool, key: str, limits: list[int], queue: str = "default",
                priorities: list[int] | None = None) -> list[uuid.UUID]:
    made = [make_job(now(), queue=queue, concurrency_key=key, concurrency_limit=limit,
                     priority=(priorities or [0] * len(limits))[i]) for i, limit in enumerate(limits)]
    await PgJobRepository(pool).add(made)
    return [uuid.UUID(j.id) for j in made]


async def run_directly(pg_url: str, ids: list[uuid.UUID], expires: datetime) -> None:
    """Mark jobs running under a lease until `expires`, with no claim (no lock, no count): the backdrop of a test."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(RUN, {"ids": ids, "now": now(), "expires": expires})


def wake_params(keys: list[str], queues: list[str] | None = None) -> dict[str, Any]:
    return {"now": now(), "keys": keys, "queues": queues or [], "limit": 100, "held_before": None}


@pytest.mark.parametrize("max_running", [None, 1000], ids=["queue unlimited", "queue limited"])
async def test_far_below_their_limits_a_keyed_claim_in_progress_blocks_neither_claims_nor_finishes_of_its_keys(
        pool: Pool, pg_url: str, max_running: int | None) -> None:
    if max_running is not None:
        await PgQueueSettingsRepository(pool).upsert(QueueSettings(queue="default", max_running=max_running,
                                                                   updated_at=now()))
    a, b = await keyed(pool, "a", [100] * 6), await keyed(pool, "b", [64, 1000, 70, 64, 64, 64])
    await run_directly(pg_url, a[4:], now() + timedelta(minutes=5))  # a: 2 running, 2 + 64 <= 100
    first, second, waker = await session(pg_url), await session(pg_url), await session(pg_url)
    try:
        started = await (await first.execute(flow_sql.CLAIM_GATED, claim_params(a[:2] + b[:2], "default")))\
            .fetchall()
        assert len(started) == 4  # and `first` keeps its transaction, with its locks, open
        also = await (await second.execute(flow_sql.CLAIM_GATED, claim_params(a[2:4] + b[2:4], "default")))\
            .fetchall()
        assert len(also) == 4  # V007 waited here for the keys' exclusive locks
        queues = ["default"] if max_running else []
        assert await (await waker.execute(flow_sql.WAKE, wake_params(["a", "b"], queues))).fetchall() == []
    finally:
        for conn in (first, second, waker):
            await conn.close()


@pytest.mark.parametrize(("limits", "running"), [
    ([63, 63], 0),  # a limit under 8 stripes x 8: never fast
    ([100, 100], 37),  # 37 + 64 > 100
    ([1000, 10], 0),  # mixed limits: the smallest limit among the key's candidates decides
], ids=["small limit", "near the limit", "mixed limits"])
async def test_near_a_keys_limit_the_claim_excludes_the_other_claims_and_the_finishes_of_the_key(
        pool: Pool, pg_url: str, limits: list[int], running: int) -> None:
    ids = await keyed(pool, "k", limits + [limits[0]] * (running + 2))
    await run_directly(pg_url, ids[len(limits):len(limits) + running], now() + timedelta(minutes=5))
    first, second, waker = await session(pg_url), await session(pg_url), await session(pg_url)
    try:
        assert len(await (await first.execute(flow_sql.CLAIM_GATED, claim_params(ids[:len(limits)], "default")))
                   .fetchall()) == len(limits)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await second.execute(flow_sql.CLAIM_GATED, claim_params(ids[-2:], "default"))
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await waker.execute(flow_sql.WAKE, wake_params(["k"]))
    finally:
        for conn in (first, second, waker):
            await conn.close()


async def test_a_keyed_batch_with_more_than_eight_jobs_of_a_key_takes_the_exact_path(pool: Pool, pg_url: str) -> None:
    ids = await keyed(pool, "k", [100_000] * 11)
    first, waker = await session(pg_url), await session(pg_url)
    try:
        assert len(await (await first.execute(flow_sql.CLAIM_GATED, claim_params(ids[:9], "default")))
                   .fetchall()) == 9
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await waker.execute(flow_sql.WAKE, wake_params(["k"]))
    finally:
        await first.close()
        await waker.close()


async def test_near_the_limit_the_exact_path_starts_the_first_jobs_in_start_order_and_holds_the_rest(
        pool: Pool, pg_url: str) -> None:
    ids = await keyed(pool, "k", [64] * 68, priorities=[0] * 60 + [1, 5, 3, 9, 2, 7, 4, 8])
    jobs = PgJobRepository(pool)
    for i in range(0, 60, 6):  # the first batch far below (fast), then the exact path: 60 running
        assert len(await jobs.claim([str(j) for j in ids[i:i + 6]], worker_id="w", now=now(),
                                    lease_seconds=300)) == 6
    started = await jobs.claim([str(j) for j in ids[60:]], worker_id="w", now=now(), lease_seconds=300)
    assert sorted(j.priority for j in started) == [5, 7, 8, 9]  # the key had 4 slots left
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
        rows = await (await conn.execute("SELECT priority, state, held_for FROM jobs WHERE priority > 0")).fetchall()
    assert {row["priority"]: (row["state"], row["held_for"]) for row in rows} == {
        9: ("running", None), 8: ("running", None), 7: ("running", None), 5: ("running", None),
        4: ("queued", "key"), 3: ("queued", "key"), 2: ("queued", "key"), 1: ("queued", "key")}


async def test_a_lost_workers_slot_of_a_key_frees_when_its_lease_expires_on_the_fast_path(pool: Pool,
                                                                                         pg_url: str) -> None:
    ids = await keyed(pool, "k", [70] * 44)
    await run_directly(pg_url, ids[:40], now() - timedelta(seconds=1))  # 40 expired leases, never rescued
    first, waker = await session(pg_url), await session(pg_url)
    try:  # 40 + 64 > 70: fast only because the expired leases count for nothing
        assert len(await (await first.execute(flow_sql.CLAIM_GATED, claim_params(ids[40:], "default")))
                   .fetchall()) == 4
        assert await (await waker.execute(flow_sql.WAKE, wake_params(["k"]))).fetchall() == []
    finally:
        await first.close()
        await waker.close()


RACE_KEYS = {"far": [100_000], "mid": [150], "near": [70], "small": [5], "mixed": [64, 90, 300, 2000],
             "mixed-small": [3, 500]}


@pytest.mark.parametrize("max_running", [None, 100_000, 200], ids=["queue unlimited", "queue far", "queue near"])
async def test_keyed_claims_racing_from_many_connections_never_start_a_job_beyond_its_limit(
        pool: Pool, connections: list[Pool], pg_url: str, max_running: int | None) -> None:
    """16 connections claim random batches of 1 to 24 jobs of six keys, nothing finishes: keys far from, near and
    under the fast path's threshold, and keys whose jobs carry different limits. The exact path, run one claim at a
    time in any order, starts a job only while fewer than its own limit of its key run; with nothing finishing, such
    an order exists if and only if, sorted by limit, the i-th running job of a key has a limit of at least i. With one
    limit per key: exactly the limit runs, the rest is held for the key."""
    queue = "race"
    limited: tuple[str, ...] = ()
    if max_running is not None:
        await PgQueueSettingsRepository(pool).upsert(QueueSettings(queue=queue, max_running=max_running,
                                                                   updated_at=now()))
        limited = (queue,)
    ids: list[str] = []
    for key, limits in RACE_KEYS.items():
        count = 400 if key != "far" else 600
        ids += [str(i) for i in await keyed(pool, key, [random.choice(limits) for _ in range(count)], queue=queue)]
    random.shuffle(ids)

    async def claimer(repo: PgJobRepository) -> None:
        while ids:
            batch = [ids.pop() for _ in range(min(len(ids), random.randint(1, 24)))]
            await repo.claim(batch, worker_id="w", now=now(), lease_seconds=300, limited=limited)

    await asyncio.gather(*(claimer(PgJobRepository(made)) for made in connections))
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
        rows = await (await conn.execute("SELECT concurrency_key AS key, concurrency_limit AS lim, state, held_for"
                                         " FROM jobs WHERE queue = %s", [queue])).fetchall()
    running = {key: sorted(r["lim"] for r in rows if r["key"] == key and r["state"] == "running") for key in RACE_KEYS}
    assert all(lim >= i for limits in running.values() for i, lim in enumerate(limits, 1)), running
    assert {r["state"] for r in rows} == {"running", "queued"}
    assert all(r["held_for"] is not None for r in rows if r["state"] == "queued")  # every job was decided
    total = sum(len(limits) for limits in running.values())
    if max_running is not None:
        assert total <= max_running
    if max_running != 200:  # the queue does not bind: each key with one limit runs exactly that limit
        assert {key: len(running[key]) for key in ("far", "mid", "near", "small")} == {
            "far": 600, "mid": 150, "near": 70, "small": 5}
    else:
        assert total == 200


async def test_a_fast_keyed_claim_reads_its_keys_running_jobs_not_the_others(pg_url: str) -> None:
    """With 20,000 jobs queued and 600 of another key running, a fast claim of 8 jobs of a key with 10 running reads
    about its 8 jobs and the 10 it counts."""
    pool = create_pool(pg_url, max_size=1)
    await open_pool(pool)
    try:
        await PgJobRepository(pool).add([make_job(now()) for _ in range(20_000)])
        big = await keyed(pool, "big", [100_000] * 600)
        mine = await keyed(pool, "mine", [100_000] * 18)
    finally:
        await pool.close()
    await run_directly(pg_url, big + mine[:10], now() + timedelta(minutes=5))
    for generic in (False, True):
        statements = [("fast keyed claim", flow_sql.CLAIM_GATED, claim_params(mine[10:], "default"), 8 + 10)]
        read, returned = await rows_read(pg_url, statements, generic)
        assert len(returned["fast keyed claim"]) == 8
        assert all(rows <= 5 * handled + 50 for rows, handled in read.values()), read


async def test_a_fast_keyed_claim_counts_its_keys_running_jobs_not_every_running_job(pg_url: str) -> None:
    """64 keys with 2 jobs running and 50 finished each: a fast claim of one job of each key counts each key's running
    rows through the key's index, 128 rows in all, where V011's count (the lease in the index condition) was planned
    on jobs_running_lease and read every running job once per key (8,192 rows)."""
    pool = create_pool(pg_url, max_size=1)
    await open_pool(pool)
    try:
        await PgQueueSettingsRepository(pool).upsert(QueueSettings(queue="default", max_running=100_000,
                                                                   updated_at=now()))
        per_key = [await keyed(pool, f"tenant-{i}", [100_000] * 53) for i in range(64)]
    finally:
        await pool.close()
    await run_directly(pg_url, [i for ids in per_key for i in ids[:52]], now() + timedelta(minutes=5))
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("UPDATE jobs SET state = 'succeeded', finished_at = now(), lease_worker = NULL,"
                           " lease_token = NULL, lease_expires_at = NULL WHERE id = ANY(%(ids)s)",
                           {"ids": [i for ids in per_key for i in ids[2:52]]})
        await conn.execute("VACUUM ANALYZE jobs")
        await conn.execute("LOAD 'auto_explain'")
        for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_nested_statements = on",
                        "auto_explain.log_analyze = on", "auto_explain.log_timing = off",
                        "auto_explain.log_format = json", "client_min_messages = log"):
            await conn.execute("SET " + setting)
        found: list[dict[str, Any]] = []
        conn.add_notice_handler(lambda diag: found.append(json.loads(diag.message_primary.split("plan:", 1)[1]))
                                if "plan:" in (diag.message_primary or "") else None)
        async with conn.transaction(force_rollback=True):
            started = await (await conn.execute(flow_sql.CLAIM_GATED, claim_params([ids[52] for ids in per_key],
                                                                                   "default"))).fetchall()
    assert len(started) == 64
    [count] = [p["Plan"] for p in found if "r.concurrency_key = k.key" in p["Query Text"]]
    scans = [node for node in walk(count) if node.get("Relation Name") == "jobs"]
    read = sum((node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"] for node in scans)
    assert read == 128, [(n.get("Index Name"), n["Actual Rows"], n.get("Rows Removed by Filter")) for n in scans]


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


# Dispatch gating (V013): far below their limits (in flight + 8 stripes x 32 <= the smallest limit among a key's jobs
# in the batch, at most 32 of them), a submit locks its keys shared plus one gate stripe and dispatches its batch.


async def gate(conn: psycopg.AsyncConnection[Any], jobs: list[Any]) -> list[Any]:
    async with conn.transaction():
        return await flow.gate_new(conn, jobs, now())


async def test_far_below_their_limits_a_submit_does_not_wait_for_the_finishes_of_its_keys(pool: Pool,
                                                                                         pg_url: str) -> None:
    dispatched = await keyed(pool, "a", [1000] * 50)  # in flight: 50 + 256 <= 1000
    waker, submitter = await session(pg_url), await session(pg_url)
    try:
        await waker.execute(flow_sql.LOCK_FOR_WAKING, {"keys": ["a", "b"], "queues": []})  # a finish, in progress
        jobs = [make_job(now(), concurrency_key=key, concurrency_limit=limit)
                for key, limit in [("a", 1000)] * 20 + [("b", 300)] * 31 + [("b", 256)]]
        gated = await gate(submitter, jobs)  # V005-V012 waited here for the keys' exclusive locks
        assert len(gated) == 52 and not any(job.held for job in gated)
    finally:
        await waker.close()
        await submitter.close()
    assert len(dispatched) == 50


@pytest.mark.parametrize(("limits", "in_flight"), [
    ([255, 255], 0),  # a limit under 8 stripes x 32: never fast
    ([400, 400], 145),  # 145 + 256 > 400
    ([10_000, 255], 0),  # mixed limits: the smallest among the key's jobs decides
    ([10_000] * 33, 0),  # more than 32 jobs of the key
], ids=["small limit", "near the limit", "mixed limits", "big batch"])
async def test_near_a_keys_limit_a_submit_locks_the_key_exclusively(pool: Pool, pg_url: str, limits: list[int],
                                                                    in_flight: int) -> None:
    await keyed(pool, "k", [limits[0]] * in_flight)
    waker, submitter = await session(pg_url), await session(pg_url)
    try:
        await waker.execute(flow_sql.LOCK_FOR_WAKING, {"keys": ["k"], "queues": []})
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await gate(submitter, [make_job(now(), concurrency_key="k", concurrency_limit=lim) for lim in limits])
    finally:
        await waker.close()
        await submitter.close()


GATE_KEYS = {"far": [100_000], "near": [400], "small": [10], "mixed": [260, 300, 2000]}


async def test_submits_racing_from_many_connections_never_dispatch_beyond_a_keys_limit(
        connections: list[Pool], pg_url: str) -> None:
    """16 connections submit random batches of 1 to 40 jobs of four keys at once, nothing runs: keys far from, near
    and under the fast path's threshold, and a key whose jobs carry different limits. Sorted by limit, the i-th
    dispatched job of a key has a limit of at least i; a key with one limit ends with exactly its limit dispatched,
    the rest held for the key."""
    pending = [(key, random.choice(limits)) for key, limits in GATE_KEYS.items()
               for _ in range(900 if key == "far" else 600)]
    random.shuffle(pending)

    async def submitter(repo: PgJobRepository) -> None:
        while pending:
            batch = [pending.pop() for _ in range(min(len(pending), random.randint(1, 40)))]
            await repo.add([make_job(now(), concurrency_key=key, concurrency_limit=lim) for key, lim in batch])

    await asyncio.gather(*(submitter(PgJobRepository(made)) for made in connections))
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
        rows = await (await conn.execute("SELECT concurrency_key AS key, concurrency_limit AS lim, held_for FROM jobs"
                                         " WHERE state = 'queued'")).fetchall()
    dispatched = {key: sorted(r["lim"] for r in rows if r["key"] == key and r["held_for"] is None) for key in GATE_KEYS}
    assert all(lim >= i for limits in dispatched.values() for i, lim in enumerate(limits, 1)), dispatched
    assert {key: len(dispatched[key]) for key in ("far", "near", "small")} == {"far": 900, "near": 400, "small": 10}
    assert len(rows) == 900 + 3 * 600
