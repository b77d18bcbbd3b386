"""Flow control on PostgreSQL (adapters/postgres/flow_sql.py says how the locks make it safe): the gated claim,
dispatch gating of new and promoted jobs, and waking held jobs. Functions over a connection, so that the job and
schedule repositories run them inside their own transactions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Final, LiteralString

import psycopg
from psycopg.rows import DictRow, tuple_row

from adapters.postgres import flow_sql
from adapters.postgres.rows import _job_from_row, claimed_jobs
from domain.flow import admit
from domain.job import Job, State

Connection = psycopg.AsyncConnection[DictRow]
WAKE_LIMIT: Final = 10_000
# Dispatch gating's fast path (V013): a key is far below its limit when what it has in flight plus GATE_STRIPES x
# GATE_SHARE is within the smallest limit of its jobs in the batch, and the batch has at most GATE_SHARE of them.
GATE_STRIPES: Final = 8
GATE_SHARE: Final = 32


def gated(job: Job, limited: Collection[str]) -> bool:
    """Does the job's start have to be counted (a key, or a queue the caller knows to limit starts)?"""
    return job.concurrency_key is not None or job.queue in limited


def in_flight(job: Job) -> bool:
    """Does the job hold a slot of its key: running, or dispatched (queued, not held)?"""
    return job.state is State.RUNNING or (job.state is State.QUEUED and not job.held)


async def claim_gated(conn: Connection, ids: str, params: dict[str, Any], limited: Collection[str]) -> list[Job]:
    """Lock the keys and limiting queues of the queued jobs among `ids`, then start those within their limits and hold
    the others, in one statement (gnomon_claim_gated, V005, V006 and V011: a queue far below its max_running, and
    keys far below their limits, are locked shared, near them exclusively). It handles any job, limited or not.
    `ids`: uuid text as an array literal (rows.uuid_array); `params` are the claim's (worker, now, expires_at)."""
    params = {**params, "ids": ids, "limited": sorted(limited)}
    rows = await (await conn.cursor(row_factory=tuple_row).execute(flow_sql.CLAIM_GATED, params)).fetchall()
    return claimed_jobs(rows, worker_id=params["worker"], now=params["now"], expires_at=params["expires_at"])


async def write_and_wake(conn: Connection, query: LiteralString, params: dict[str, Any], now: datetime,
                         keys: Collection[str], queues: Collection[str]) -> tuple[list[DictRow], list[Job]]:
    """In one transaction: the write `query` that frees slots of these keys and queues (rows no holder touches:
    running jobs), then the wake, which locks them shared before it looks. The write's rows and the woken jobs.
    Pipelined (BEGIN, write, wake, COMMIT in one exchange, not four): the wake needs nothing of the write's answer."""
    async with conn.pipeline():
        async with conn.transaction():
            write = await conn.execute(query, params)
            woken = await conn.execute(flow_sql.WAKE, _wake_params(now, keys, queues))
        written, rows = await write.fetchall(), await woken.fetchall()
    return written, [_job_from_row(row) for row in rows]


async def gate_new(conn: Connection, jobs: Sequence[Job], now: datetime) -> list[Job]:
    """Dispatch gating, inside the caller's transaction: of the queued keyed jobs about to be stored, those beyond
    their key's room in flight are held instead (a key never has more than its limit dispatched or running)."""
    keyed = [j for j in jobs if j.state is State.QUEUED and j.concurrency_key is not None and not j.held]
    if not keyed:
        return list(jobs)
    marked = {job.id: job for job in await _verdict(conn, keyed, now, deciding=[])}
    return [marked.get(j.id, j) for j in jobs]


async def gate_promoted(conn: Connection, promoted: Sequence[Job], now: datetime) -> list[Job]:
    """Dispatch gating of jobs just promoted (already stored queued): hold those beyond their key's room."""
    keyed = [j for j in promoted if j.concurrency_key is not None and not j.held]
    if not keyed:
        return list(promoted)
    held = [j for j in await _verdict(conn, keyed, now, deciding=[j.id for j in keyed]) if j.held]
    if held:
        await conn.execute(flow_sql.HOLD, {"ids": [j.id for j in held], "now": now})
    marked = {job.id: job for job in held}
    return [marked.get(j.id, j) for j in promoted]


async def _verdict(conn: Connection, keyed: list[Job], now: datetime, *, deciding: list[str]) -> list[Job]:
    if await _far_below(conn, keyed, now, deciding=deciding):
        return list(keyed)
    keys = sorted({j.concurrency_key for j in keyed if j.concurrency_key is not None})
    await conn.execute(flow_sql.LOCK_FOR_HOLDING, {"keys": keys, "queues": []})
    params = {"keys": keys, "now": now, "deciding": deciding}
    busy = {row["key"]: row["busy"] for row in await (await conn.execute(flow_sql.IN_FLIGHT, params)).fetchall()}
    admitted, held = admit(keyed, key_busy=busy)
    now_in_flight = Counter(job.concurrency_key for job in admitted)  # the keys' bounds, exact again (V016)
    counts = [busy.get(key, 0) + now_in_flight[key] for key in keys]
    await conn.execute(flow_sql.RESET_BOUNDS, {"keys": keys, "counts": counts})
    return admitted + [job.hold(now=now, reason=reason) for job, reason in held]


async def bump(conn: Connection, dispatched: Sequence[Job]) -> None:
    """Add keyed jobs dispatched without gating (a manual retry) to their keys' bounds (V016). The caller holds the
    keys' locks shared (job_repository._freeing takes them with the keys it frees), so an exact gating's reset,
    which holds them exclusively, never runs beside it."""
    keys = sorted(job.concurrency_key for job in dispatched if job.concurrency_key is not None)
    if keys:
        await conn.execute(flow_sql.BUMP, {"keys": keys})


async def _far_below(conn: Connection, keyed: list[Job], now: datetime, *, deciding: list[str]) -> bool:
    """Are all these keys far below their limits (gnomon_gate_fast, V013, V016: their locks taken shared, kept when
    true, their bounds raised by what the batch admits)?
    Batches that cannot pass (a key's limit under GATE_STRIPES x GATE_SHARE, or more than GATE_SHARE of its jobs)
    are not even tried."""
    limits: dict[str, list[int]] = {}
    for job in keyed:
        if job.concurrency_key is not None:
            limits.setdefault(job.concurrency_key, []).append(job.concurrency_limit)
    if any(len(lims) > GATE_SHARE or min(lims) < GATE_STRIPES * GATE_SHARE for lims in limits.values()):
        return False
    params = {"keys": [key for key, lims in limits.items() for _ in lims],
              "limits": [lim for lims in limits.values() for lim in lims], "now": now, "deciding": deciding,
              "stripes": GATE_STRIPES, "share": GATE_SHARE}
    row = await (await conn.execute(flow_sql.GATE_FAST, params)).fetchone()
    return bool(row and row["fast"])


async def lock_for_waking(conn: Connection, keys: Collection[str], queues: Collection[str]) -> None:
    await conn.execute(flow_sql.LOCK_FOR_WAKING, {"keys": sorted(keys), "queues": sorted(queues)})


async def limiting(conn: Connection, queues: Collection[str]) -> set[str]:
    """The queues among these whose settings limit starts."""
    if not queues:
        return set()
    rows = await (await conn.execute(flow_sql.LIMITING_QUEUES, {"queues": sorted(queues)})).fetchall()
    return {row["queue"] for row in rows}


async def wake(conn: Connection, now: datetime, *, keys: Collection[str], queues: Collection[str],
               limit: int = WAKE_LIMIT, held_before: datetime | None = None) -> list[Job]:
    """Held jobs of these keys and queues that have room now (held before `held_before`, if given): unheld, stamped
    dispatched, returned."""
    if not keys and not queues:
        return []
    # gnomon_wake locks them shared first: a waker in the caller's transaction, or the sweep (which then waits for
    # a claim deciding on the same key, never for another waker)
    params = _wake_params(now, keys, queues, limit=limit, held_before=held_before)
    rows = await (await conn.execute(flow_sql.WAKE, params)).fetchall()
    return [_job_from_row(row) for row in rows]


def _wake_params(now: datetime, keys: Collection[str], queues: Collection[str], *, limit: int = WAKE_LIMIT,
                 held_before: datetime | None = None) -> dict[str, Any]:
    return {"now": now, "keys": sorted(keys), "queues": sorted(queues), "limit": limit, "held_before": held_before}


async def held_names(conn: Connection, limit: int) -> tuple[list[str], list[str]]:
    """The keys and the queues that have held jobs (at most `limit` of each)."""
    rows = await (await conn.execute(flow_sql.HELD_NAMES, {"limit": limit})).fetchall()
    return [r["name"] for r in rows if r["kind"] == "key"], [r["name"] for r in rows if r["kind"] == "queue"]
