"""Worker CPU per job, in process (issue 4): one `Worker` (concurrency 64) on the real PostgreSQL repository runs
N `noop` jobs queued beforehand in a throwaway database; the ids come from the in-memory dispatcher, so what is
measured is the worker's own Python (claim, Job values, handler tasks, timeouts, outcomes, group commit) and its
PostgreSQL client, without Redis or the API. Prints this process's CPU µs per job and the rate.

    python -m bench.worker_cpu [--jobs 20000] [--reps 3] [--concurrency 64]

Run from another checkout (`cd /tmp/wt-old && /work/main/.venv/bin/python -m bench.worker_cpu`) to measure an
older version with the same venv: the current directory comes first on sys.path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from adapters.memory.clock import SystemClock
from adapters.memory.dispatcher import InMemoryDispatcher
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import create_pool, open_pool
from application.worker import Worker, WorkerSettings
from bench.databases import copy_of, migrated_template
from domain.job import Job, JobSpec


async def noop(payload: dict[str, Any], ctx: Any) -> None:
    return None


class Tasks:
    def handler(self, name: str) -> Any:
        return noop if name == "noop" else None

    def names(self) -> frozenset[str]:
        return frozenset({"noop"})


class Counted(PgJobRepository):
    """The repository, counting its claims and finishes: their batch sizes tell what per-batch cost a job bears."""

    calls: dict[str, int] = {"claim": 0, "finish": 0}

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        self.calls["claim"] += 1
        return await super().claim(*args, **kwargs)

    async def finish(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["finish"] += 1
        return await super().finish(*args, **kwargs)


async def one_run(url: str, n: int, concurrency: int) -> tuple[float, float]:
    pool = create_pool(url, max_size=4)
    await open_pool(pool)
    try:
        jobs = Counted(pool)
        dispatcher = InMemoryDispatcher()
        now = datetime.now(UTC)
        for start in range(0, n, 1000):
            batch = [Job.create(str(uuid.uuid4()), JobSpec(task="noop", payload={"i": i}), now=now)
                     for i in range(start, min(n, start + 1000))]
            await jobs.add(batch)
            await dispatcher.push(batch)
        settings = WorkerSettings(worker_id="bench-worker", concurrency=concurrency, pop_timeout=0.05)
        worker = Worker(jobs, dispatcher, Tasks(), SystemClock(), settings)
        Counted.calls = {"claim": 0, "finish": 0}
        cpu, wall = time.process_time(), time.perf_counter()
        running = asyncio.create_task(worker.run())
        while worker.executed < n or worker.outbox or worker.held:  # noqa: ASYNC110 - the worker signals no end
            await asyncio.sleep(0.002)
        wall = time.perf_counter() - wall
        await asyncio.sleep(0.2)  # the last write ends: stopping during it would write its outcomes twice
        worker.stop()
        await running
        cpu = time.process_time() - cpu
    finally:
        await pool.close()
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with migrated_template("gnomon_benchw") as template:
        cpus, rates = [], []
        for _ in range(args.reps):
            with copy_of(template) as url:
                cpu, wall = asyncio.run(one_run(url, args.jobs, args.concurrency))
            cpus.append(cpu / args.jobs * 1e6)
            rates.append(args.jobs / wall)
            batches = ", ".join(f"{args.jobs / c:.0f} jobs per {what}" for what, c in Counted.calls.items() if c)
            print(f"worker CPU {cpus[-1]:.1f} us/job, {rates[-1]:,.0f} jobs/s ({batches})", flush=True)
        print(f"median: worker CPU {statistics.median(cpus):.1f} us/job, {statistics.median(rates):,.0f} jobs/s")


if __name__ == "__main__":
    main()
