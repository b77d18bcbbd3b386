"""The held counts of the queue statistics on PostgreSQL (the gauge gnomon_queue_held_jobs and `held` in
GET /v1/queues): right per queue and reason, and read from the held indexes, not from the whole table."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from adapters.postgres import flow_sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import create_pool, open_pool
from adapters.postgres.queue_settings import PgQueueSettingsRepository
from domain.flow import QueueSettings
from domain.job import Hold
from tests.contracts.repositories import make_job
from tests.integration.test_pg_flow import Plans, _explaining, _read

LEASE = 60.0


def now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("generic", [False, True], ids=["custom plans", "generic plans"])
async def test_held_counts_are_right_and_read_only_the_held_jobs(pg_url: str, generic: bool) -> None:
    pool = create_pool(pg_url, max_size=1)
    await open_pool(pool)
    jobs, keys = PgJobRepository(pool), [f"tenant-{i}" for i in range(20)]
    try:
        await jobs.add([make_job(now()) for _ in range(20_000)])
        await jobs.add([make_job(now(), queue="mail", concurrency_key=keys[i % 20]) for i in range(2000)])
        await PgQueueSettingsRepository(pool).upsert(QueueSettings(queue="p", paused=True, updated_at=now()))
        paused = [make_job(now(), queue="p") for _ in range(500)]
        await jobs.add(paused)
        await jobs.claim([j.id for j in paused], worker_id="w", now=now(), lease_seconds=LEASE, limited=("p",))
        stats = {s.queue: s for s in await jobs.queue_stats(now())}
    finally:
        await pool.close()

    assert {queue: s.held for queue, s in stats.items()} == {
        "default": {}, "mail": {Hold.KEY: 2000 - 20}, "p": {Hold.QUEUE: 500}}
    assert stats["mail"].counts["queued"] == 2000 and stats["p"].counts["queued"] == 500

    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("ANALYZE jobs")
        await _explaining(conn, generic)
        plans = Plans()
        conn.add_notice_handler(plans)
        async with conn.transaction(force_rollback=True):
            await conn.execute(flow_sql.HELD_COUNTS, {})
        found = plans.take()
    read = sum(_read(plan) for plan in found)
    print(f"\nheld counts: {read} rows read for {2000 - 20 + 500} held of {22_500} jobs")
    # A bitmap scan counts twice (its index node and its heap node both output the rows); the whole table is 22,500.
    assert found and read <= 2 * (2000 - 20 + 500) + 50, read
