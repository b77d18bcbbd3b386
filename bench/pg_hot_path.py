"""PostgreSQL's own CPU per job on the hot path (issue 4), statement kind by statement kind: N `noop` jobs go
through the repository in rounds as in S1 (COPY of 1,000, claims of `--claim`, finishes of `--finish`) on one
connection of a throwaway database; the backend's CPU (utime + stime from /proc, so run it on the server's machine)
and the WAL it wrote (pg_current_wal_lsn deltas: the whole cluster's, so other databases' writes count too) are
summed per phase. What the client does is left out, and so are the WAL writer and the checkpointer.

    python -m bench.pg_hot_path [--jobs 20000] [--reps 3] [--claim 64] [--finish 200]

Run from another checkout (`cd /tmp/wt-old && /work/main/.venv/bin/python -m bench.pg_hot_path`) to measure the
schema and statements of an older version with the same venv.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import create_pool, open_pool
from application.ports import Finished
from bench.databases import copy_of, migrated_template
from domain.job import Job, JobSpec

TICK = os.sysconf("SC_CLK_TCK")
PHASES = ("copy", "claim", "finish")


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Meter:
    def __init__(self, probe: psycopg.Connection, pid: int) -> None:
        self.probe, self.pid = probe, pid
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.wal = dict.fromkeys(PHASES, 0)

    def lsn(self) -> int:
        return self.probe.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()[0]

    async def measure(self, phase: str, work: Any) -> Any:
        cpu, lsn = cpu_of(self.pid), self.lsn()
        result = await work
        self.cpu[phase] += cpu_of(self.pid) - cpu
        self.wal[phase] += self.lsn() - lsn
        return result


def finished(job: Job, now: datetime) -> Finished:
    new, run = job.succeed(token=job.version, now=now, result=None)
    return Finished(job=new, run=run)


async def one_run(url: str, n: int, claim: int, finish: int) -> Meter:
    pool = create_pool(url, min_size=1, max_size=1)
    await open_pool(pool)
    try:
        jobs = PgJobRepository(pool)
        async with pool.connection() as conn:
            pid = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())["pid"]
        with psycopg.connect(url, autocommit=True) as probe:
            meter = Meter(probe, pid)
            for start in range(0, n, 1000):
                now = datetime.now(UTC)
                batch = [Job.create(str(uuid.uuid4()), JobSpec(task="noop"), now=now)
                         for _ in range(start, min(n, start + 1000))]
                await meter.measure("copy", jobs.add(batch))
                for at in range(0, len(batch), finish):
                    claimed: list[Job] = []
                    for c in range(at, min(len(batch), at + finish), claim):
                        ids = [job.id for job in batch[c:c + claim]]
                        claimed += await meter.measure("claim", jobs.claim(
                            ids, worker_id="bench", now=datetime.now(UTC), lease_seconds=30))
                    done = datetime.now(UTC)
                    outcomes = [finished(job, done) for job in claimed]
                    recorded = await meter.measure("finish", jobs.finish(outcomes, now=done))
                    assert not recorded.refused
    finally:
        await pool.close()
    return meter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--claim", type=int, default=64)
    parser.add_argument("--finish", type=int, default=200)
    args = parser.parse_args()
    with migrated_template("gnomon_benchp") as template:
        totals = []
        for _ in range(args.reps):
            with copy_of(template) as url:
                meter = asyncio.run(one_run(url, args.jobs, args.claim, args.finish))
            per = {p: meter.cpu[p] / args.jobs * 1e6 for p in PHASES}
            totals.append(sum(per.values()))
            print("PostgreSQL backend CPU us/job " + ", ".join(f"{p} {v:.1f}" for p, v in per.items())
                  + f"; total {totals[-1]:.1f}; WAL B/job " + ", ".join(
                      f"{p} {meter.wal[p] / args.jobs:.0f}" for p in PHASES), flush=True)
        print(f"median total {statistics.median(totals):.1f} us/job")


if __name__ == "__main__":
    main()
