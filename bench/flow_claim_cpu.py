"""PostgreSQL backend CPU per claim of a limited queue (issue 7): the plain CLAIM statement against the gated claim
function (and any variant of it that --sql creates), on a throwaway database with RUNNING jobs running in a queue
limited to 1,000,000. Each call claims BATCH fresh queued jobs, then marks them succeeded with a plain UPDATE (so
the number running stays put); the figure is the backend's CPU per call, both statements included, read from /proc
(10 ms ticks: keep CALLS high). This machine's PostgreSQL only: it reads the backend's /proc entry.

With KEYS=N (N > 0) the jobs the functions claim, and the RUNNING ones, carry one of N concurrency keys in turn
(limit KEY_LIMIT, 100,000 by default: never binding, as in `e2e.py --limits`); the plain CLAIM, which starts no
keyed job, then claims unkeyed jobs, as the reference of a claim nothing counts.

    BATCH=16 CALLS=500 RUNNING=128 python -m bench.flow_claim_cpu gnomon_claim_gated [--sql variants.sql] [FUNC...]
    KEYS=64 BATCH=64 python -m bench.flow_claim_cpu gnomon_claim_gated --sql old_gated.sql gnomon_claim_gated_old
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from adapters.postgres import sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import create_pool, open_pool
from adapters.postgres.queue_settings import PgQueueSettingsRepository
from domain.flow import QueueSettings
from tests.contracts.repositories import make_job

BASE = os.environ.get("GNOMON_BENCH_DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres").rsplit("/", 1)[0]
BATCH = int(os.environ.get("BATCH", 16))
CALLS = int(os.environ.get("CALLS", 300))
RUNNING = int(os.environ.get("RUNNING", 128))
KEYS = int(os.environ.get("KEYS", 0))
KEY_LIMIT = int(os.environ.get("KEY_LIMIT", 100_000))
DONE = ("UPDATE jobs SET state = 'succeeded', finished_at = now(), lease_worker = NULL, lease_token = NULL,"
        " lease_expires_at = NULL WHERE id = ANY(%(ids)s)")


def now() -> datetime:
    return datetime.now(UTC)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    args = sys.argv[1:]
    extra = args[args.index("--sql") + 1] if "--sql" in args else None
    funcs = [a for i, a in enumerate(args) if a != "--sql" and (i == 0 or args[i - 1] != "--sql")]
    db = f"gnomon_bench_claimcpu_{os.getpid()}"
    url = f"{BASE}/{db}"
    with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        subprocess.run([sys.executable, "-m", "entrypoints.cli", "migrate", "--database-url", url], check=True,
                       capture_output=True)
        if extra:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(Path(extra).read_text())  # type: ignore[call-overload]
        asyncio.run(measure(url, funcs))
    finally:
        with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def measure(url: str, funcs: list[str]) -> None:
    pool = create_pool(url, max_size=2)
    await open_pool(pool)
    await PgQueueSettingsRepository(pool).upsert(QueueSettings(queue="big", max_running=1_000_000, updated_at=now()))
    repo = PgJobRepository(pool)
    plain = [make_job(now(), queue="big") for _ in range(BATCH * CALLS)]
    n = BATCH * CALLS * len(funcs) + RUNNING
    made = [make_job(now(), queue="big", **({"concurrency_key": f"tenant-{i % KEYS}", "concurrency_limit": KEY_LIMIT}
                                            if KEYS else {})) for i in range(n)]
    for i in range(0, n, 5000):
        await repo.add(made[i:i + 5000])
    for i in range(0, len(plain), 5000):
        await repo.add(plain[i:i + 5000])
    ids = [uuid.UUID(j.id) for j in made]
    for i in range(0, RUNNING, 64):
        await repo.claim([str(i) for i in ids[i:min(i + 64, RUNNING)]], worker_id="w", now=now(), lease_seconds=3600,
                         limited=("big",))
    await pool.close()
    pos, plain_ids = RUNNING, [uuid.UUID(j.id) for j in plain]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
        await conn.execute("VACUUM ANALYZE jobs")
        pid = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone() or {})["pid"]
        for name in ["plain", *funcs]:
            query = sql.CLAIM if name == "plain" else (
                f"SELECT * FROM {name}(%(ids)s::uuid[], %(limited)s::text[], %(worker)s, %(now)s, %(expires_at)s)")
            cpu0, wall0, started = cpu_seconds(pid), time.perf_counter(), 0
            for call in range(CALLS):
                if name == "plain":
                    batch = plain_ids[call * BATCH:(call + 1) * BATCH]
                else:
                    batch, pos = ids[pos:pos + BATCH], pos + BATCH
                params = {"ids": batch, "limited": [] if name == "plain" else ["big"], "worker": "w", "now": now(),
                          "expires_at": now() + timedelta(hours=1)}
                started += len(await (await conn.execute(query, params)).fetchall())  # type: ignore[arg-type]
                await conn.execute(DONE, {"ids": batch})
            cpu = (cpu_seconds(pid) - cpu0) / CALLS * 1e6
            wall = (time.perf_counter() - wall0) / CALLS * 1e6
            print(f"{name:28s} started {started:6d}  backend CPU {cpu:6.0f} us/call  wall {wall:6.0f} us/call")


if __name__ == "__main__":
    main()
