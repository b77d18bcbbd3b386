"""A test's view of a real gnomon stack: jobs submitted and read through the use cases of a runtime built on the
test's own database and Redis prefix, while real `gnomon` processes (tests/integration/processes.py) work.

Every wait here is bounded; a test that waits for an end state gets an AssertionError that says where the
jobs stood instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from attrs import define

from adapters.postgres.pool import connection
from domain.errors import Unavailable
from domain.job import Job, JobSpec, Run, State
from domain.retry import Backoff
from entrypoints.container import Runtime, build
from entrypoints.settings import Settings
from tests.integration.processes import GnomonProcess

QUICK_RETRY = Backoff(base_seconds=0.1, factor=1, max_seconds=0.1, jitter=False)
SAMPLE_TASKS = "tests.integration.sample_tasks"


RUN = secrets.token_hex(3)  # one per pytest process: its keys are swept at the end (conftest.py)


def new_prefix() -> str:
    """A Redis key prefix of one test: tests sharing a Redis database never see each other's keys; all of this
    pytest process's prefixes start with `run_prefix()`."""
    return f"{run_prefix()}{secrets.token_hex(6)}"


def run_prefix() -> str:
    """What every key prefix of this pytest process starts with (and no other process's does)."""
    return f"gnomon-test-{RUN}-"


def sample_tasks(*names: str) -> str:
    """GNOMON_TASKS naming functions of tests/integration/sample_tasks.py under their own names."""
    return ",".join(f"{name}={SAMPLE_TASKS}:{name}" for name in names)


@define
class Client:
    runtime: Runtime

    async def submit(self, *specs: JobSpec) -> list[str]:
        submitted = await self.runtime.use_cases.submit_jobs()(list(specs), prefix=None)
        return [s.job.id for s in submitted]

    async def job(self, job_id: str) -> Job:
        return await self.runtime.use_cases.get_job()(job_id)

    async def runs(self, job_id: str) -> list[Run]:
        return await self.runtime.use_cases.job_runs()(job_id)

    async def cancel(self, job_id: str) -> Job:
        return await self.runtime.use_cases.cancel_job()(job_id)

    async def counts(self) -> dict[str, int]:
        """Jobs of the test's database by state (one query, however many jobs)."""
        async with connection(self.runtime.adapters.pool()) as conn:
            rows = await (await conn.execute("SELECT state, count(*) AS n FROM jobs GROUP BY state")).fetchall()
        return {row["state"]: row["n"] for row in rows}

    async def until(self, job_id: str, *states: State, timeout: float = 20.0) -> Job:
        """The job once it is in one of `states`; AssertionError after `timeout` s."""
        return await eventually(lambda: self.job(job_id), lambda job: job.state in states, timeout,
                                f"job {job_id} never reached {', '.join(states)}")

    async def until_all(self, state: State, total: int, timeout: float = 25.0) -> dict[str, int]:
        """Wait until `total` jobs are in `state`; the counts by state."""
        return await eventually(self.counts, lambda counts: counts.get(state, 0) >= total, timeout,
                                f"never {total} jobs {state}")


async def eventually(probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str,
                     every: float = 0.05) -> Any:
    """Call `probe` until `done(value)`; AssertionError with the last value after `timeout` s. A probe that
    finds the database away (a test that restarts it) just tries again."""
    end = time.monotonic() + timeout
    while True:
        try:
            value = await probe()
        except Unavailable as exc:
            value = exc
        else:
            if done(value):
                return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} within {timeout:g} s; last seen: {value!r}")
        await asyncio.sleep(every)


async def wait_for_path(path: Any, timeout: float = 10.0) -> None:
    """Bounded wait for a file that a handler in another process writes."""
    await eventually(lambda: _exists(path), bool, timeout, f"{path} never appeared")


async def _exists(path: Any) -> bool:
    return path.exists()


@asynccontextmanager
async def client(database_url: str, redis_url: str, prefix: str, *,
                 tasks: Mapping[str, str] | None = None) -> AsyncIterator[Client]:
    """A Client on its own runtime; `tasks` is the registry the submitting side knows (GNOMON_TASKS)."""
    settings = Settings(database_url=database_url, redis_url=redis_url, redis_prefix=prefix, tasks=tasks or {})
    runtime = build(settings)
    await runtime.start()
    try:
        yield Client(runtime)
    finally:
        await runtime.stop()


def tasks_of(text: str) -> dict[str, str]:
    """GNOMON_TASKS text as the mapping Settings holds."""
    return dict(item.split("=", 1) for item in text.split(","))


def sigterm(process: GnomonProcess) -> None:
    """SIGTERM without waiting (GnomonProcess.terminate waits for the exit)."""
    os.kill(process.pid, signal.SIGTERM)


def worker_id(process: GnomonProcess) -> str:
    """The worker id a `gnomon worker` announced in its ready line."""
    process.wait_for_log("ready")
    found = re.search(r"ready: .*\(worker (\S+)\)", process.log)
    assert found, process.log[-2000:]
    return found.group(1)


def spec(task: str, **fields: Any) -> JobSpec:
    return JobSpec(task=task, **fields)


def ids_in(states: Iterable[Job], state: State) -> list[str]:
    return [job.id for job in states if job.state is state]
