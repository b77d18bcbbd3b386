"""The scheduler's queries cost what is due, not what the tables hold: with thousands of jobs waiting, queued
and running that are none of a query's business, no scan of its plan may produce more rows than the query
has to handle, whatever the statistics say (none, on a fresh table; or fresh ones). A join the planner may
answer by hashing the batch and scanning the whole table is what this catches (bench/README.md), in plans made
for the values at hand and in the generic plans the scheduler's sessions use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as compose

from adapters.postgres import flow_sql, sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import create_pool, open_pool
from tests.contracts.repositories import LEASE, at, make_job

FUTURE, DUE, QUEUED, RUNNING = 20_000, 3_000, 2_000, 2_000
NOW = at(1000)
SLACK = 10


def too_wide(rows: int, handled: int) -> bool:
    """An index scan may meet each row handled in two versions (the queries run one after the other, rolled
    back); a scan of what the query has no business with is an order of magnitude more."""
    return rows > 2 * handled + SLACK


def _scans(node: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """(index or relation, rows produced per loop) of every scan in an EXPLAIN (FORMAT JSON) plan."""
    if "Scan" in node["Node Type"] and "Function" not in node["Node Type"] and "CTE" not in node["Node Type"]:
        yield node.get("Index Name", node.get("Relation Name", "?")), node["Actual Rows"]
    for child in node.get("Plans", []):
        yield from _scans(child)


async def _fill(url: str) -> None:
    """20,000 future jobs, 3,000 due, 2,000 queued (just dispatched) and 2,000 running under live leases."""
    pool = create_pool(url, max_size=1)
    await open_pool(pool)
    try:
        jobs = PgJobRepository(pool)
        await jobs.add([make_job(run_at=NOW + timedelta(seconds=60 + i)) for i in range(FUTURE)])
        await jobs.add([make_job(run_at=at(1 + i % 900)) for i in range(DUE)])
        busy = [make_job(now=NOW - timedelta(seconds=1)) for _ in range(QUEUED + RUNNING)]
        await jobs.add(busy)
        await jobs.claim([j.id for j in busy[:RUNNING]], worker_id="w", now=NOW, lease_seconds=LEASE)
    finally:
        await pool.close()


QUERIES: list[tuple[str, str, dict[str, Any], int]] = [
    # First: the promotions below, rolled back, leave dead entries in jobs_state_id that its bitmap scan returns.
    ("queue gauges: what is in flight", sql.QUEUE_IN_FLIGHT, {"since": NOW - timedelta(minutes=1)}, QUEUED + RUNNING),
    ("promote a batch", sql.PROMOTE_DUE, {"now": NOW, "limit": 5000}, DUE),
    ("promote a bigger batch", sql.PROMOTE_DUE, {"now": NOW, "limit": 10_000}, DUE),
    ("promote nothing due", sql.PROMOTE_DUE, {"now": at(-1), "limit": 5000}, 0),
    ("next due", sql.NEXT_JOB_DUE_AT, {}, 1),
    ("lease rescue", sql.EXPIRED, {"now": NOW, "limit": 5000}, 0),
    ("re-dispatch", sql.REDISPATCH, {"now": NOW, "older_than": NOW - timedelta(seconds=30), "limit": 5000}, 0),
    ("prune", sql.PRUNE, {"before": NOW - timedelta(days=7), "limit": 1000}, 0),
    ("due schedules", sql.LOCK_DUE_SCHEDULES, {"now": NOW, "limit": 5000}, 0),
    ("keys and queues with held jobs", flow_sql.HELD_NAMES, {"limit": 5000}, 0),
]


PG_TYPES = {datetime: "timestamptz", int: "bigint"}  # the types psycopg sends these values as


def _prepared(query: str) -> tuple[str, list[str]]:
    """The query with $n placeholders for PREPARE, and the parameter names in $n order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"%\((\w+)\)s", number, query), names


async def _plan(conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any], generic: bool) -> Any:
    if not generic:  # one-shot: planned with the values at hand
        cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params)
    else:  # as the scheduler's sessions run it: prepared, planned once for any values (pool generic_plans)
        text, names = _prepared(query)
        await conn.execute("DEALLOCATE ALL")
        types = "(" + ", ".join(PG_TYPES[type(params[n])] for n in names) + ")" if names else ""
        await conn.execute(compose.SQL("PREPARE q" + types + " AS {}").format(compose.SQL(text)))  # type: ignore[arg-type]
        arguments = compose.SQL(", ").join(compose.Literal(params[n]) for n in names)
        explain = "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE q" + ("({})" if names else "")
        cur = await conn.execute(compose.SQL(explain).format(arguments))  # type: ignore[arg-type]
    found = await cur.fetchone()
    assert found is not None
    return found[0][0]["Plan"]


@pytest.mark.parametrize("generic", [False, True], ids=["custom plans", "generic plans"])
@pytest.mark.parametrize("analyzed", [False, True], ids=["no statistics", "analyzed"])
async def test_every_scheduler_query_reads_only_what_it_handles(pg_url: str, analyzed: bool, generic: bool) -> None:
    await _fill(pg_url)
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        if analyzed:
            await conn.execute("ANALYZE jobs")
            await conn.commit()
        if generic:
            await conn.execute(sql.GENERIC_PLANS)
            await conn.commit()
        wide = {}
        for name, query, params, handled in QUERIES:
            scans = list(_scans(await _plan(conn, query, params, generic)))
            if any(too_wide(rows, handled) for _, rows in scans):
                wide[name] = scans
            await conn.rollback()
    assert wide == {}, f"scans wider than the rows handled: {wide}"
