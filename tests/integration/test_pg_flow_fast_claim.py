"""The fast claim of V006 (docs/design.md, "The claim, hard and cheap"): far below its max_running, a claim of the
queue takes its lock shared (plus one stripe of it), so claims and finishes of the queue do not wait for it; near the
limit the claim takes the lock exclusively and counts, as before. Whatever the path, the queue never has more than
max_running jobs running. A claim that waits for a lock here fails at once (lock_timeout): the tests tell "waits" from
"does not wait" without timing anything."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from adapters.postgres import flow_sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import Pool, create_pool, open_pool
from adapters.postgres.queue_settings import PgQueueSettingsRepository
from domain.flow import QueueSettings
from tests.contracts.repositories import make_job
from tests.integration.test_pg_flow import rows_read

CONNECTIONS = 16


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[Pool]:
    made = create_pool(pg_url, max_size=2)
    await open_pool(made)
    yield made
    await made.close()


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


async def test_a_keyed_batch_takes_the_exact_path_even_far_below_the_limit(pool: Pool, pg_url: str) -> None:
    ids = await queue_of(pool, 8, max_running=1000)
    keyed = [make_job(now(), queue="capped", concurrency_key="tenant", concurrency_limit=10) for _ in range(2)]
    await PgJobRepository(pool).add(keyed)
    first, second = await session(pg_url), await session(pg_url)
    try:
        claimed = await (await first.execute(flow_sql.CLAIM_GATED,
                                             claim_params([uuid.UUID(j.id) for j in keyed]))).fetchall()
        assert len(claimed) == 2  # V007: keys lock exclusively anyway, so the queue is locked exclusively too
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await second.execute(flow_sql.CLAIM_GATED, claim_params(ids[:4]))
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("limit", [64, 160])
async def test_claims_racing_from_far_below_to_the_limit_start_exactly_max_running(pool: Pool, pg_url: str,
                                                                                   limit: int) -> None:
    """16 connections claim disjoint batches of 1 to the stripe share at once, nothing finishes: the first claims take
    the fast path, the later ones count exactly; each queue ends with max_running jobs running, the rest held."""
    pools = [create_pool(pg_url, max_size=1) for _ in range(CONNECTIONS)]
    for made in pools:
        await open_pool(made)
    try:
        for queue in ("race-1", "race-2", "race-3", "race-4"):
            started = await race(pools, await queue_of(pool, 3 * limit, max_running=limit, queue=queue), queue,
                                 share=limit // 16)
            async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
                rows = await (await conn.execute("SELECT state, held_for, count(*) AS n FROM jobs WHERE queue = %s"
                                                 " GROUP BY 1, 2", [queue])).fetchall()
            assert started == limit
            assert {(row["state"], row["held_for"]): row["n"] for row in rows} == {("running", None): limit,
                                                                                   ("queued", "queue"): 2 * limit}
    finally:
        for made in pools:
            await made.close()


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
async def test_the_fast_claim_and_an_idle_wake_read_what_they_handle_not_the_backlog(pg_url: str,
                                                                                    generic: bool) -> None:
    """With 20,000 jobs queued and 200 running in a queue limited to 100,000, a fast claim of 64 reads about its 64
    jobs and the running ones it counts, and a wake that finds nothing held reads next to nothing."""
    pool = create_pool(pg_url, max_size=1)
    await open_pool(pool)
    try:
        ids = await queue_of(pool, 20_264, max_running=100_000)
        await PgJobRepository(pool).claim([str(i) for i in ids[:200]], worker_id="w", now=now(), lease_seconds=300,
                                          limited=("capped",))
    finally:
        await pool.close()
    statements = [  # name, statement, parameters, rows it handles
        ("fast claim", flow_sql.CLAIM_GATED, claim_params(ids[200:264]), 64 + 200),
        ("idle wake", flow_sql.WAKE, {"now": now(), "keys": ["k1", "k2"], "queues": ["capped"], "limit": 100,
                                      "held_before": None}, 3),
    ]
    read, returned = await rows_read(pg_url, statements, generic)
    assert len(returned["fast claim"]) == 64
    assert all(rows <= 5 * handled + 50 for rows, handled in read.values()), read
