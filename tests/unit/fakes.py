"""Small visible fakes for unit tests: a task registry built from plain functions, and a wired memory stack."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from attrs import Factory, define, field

from adapters.memory.clock import FrozenClock
from adapters.memory.dispatcher import InMemoryDispatcher
from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.schedules import InMemoryScheduleRepository
from adapters.memory.wakeup import InMemoryWakeup
from application.manage_jobs import CancelJob
from application.scheduler import SchedulerTick
from application.submit_jobs import SubmitJobs
from application.worker import Worker, WorkerSettings
from domain.errors import PermanentFailure
from domain.job import State

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@define
class DictRegistry:
    handlers: dict[str, Callable[..., Any]] = field(factory=dict)
    known: bool = True

    def names(self) -> frozenset[str] | None:
        return frozenset(self.handlers) if self.known else None

    def handler(self, name: str) -> Callable[..., Any] | None:
        return self.handlers.get(name)


def sample_tasks() -> DictRegistry:
    calls: list[str] = []

    def noop(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
        calls.append(ctx.job_id)
        return {"echo": payload}

    async def sleep(payload: dict[str, Any], ctx: Any) -> None:
        await asyncio.sleep(payload.get("seconds", 1))

    def fail(payload: dict[str, Any], ctx: Any) -> None:
        if payload.get("permanent"):
            raise PermanentFailure("no point retrying")
        raise RuntimeError(payload.get("message", "boom"))

    registry = DictRegistry({"noop": noop, "sleep": sleep, "fail": fail})
    registry.handlers["calls"] = lambda p, c: calls  # lets a test read what ran
    return registry


@define
class Stack:
    """The core wired on memory adapters with a clock the test moves."""

    clock: FrozenClock = field(factory=lambda: FrozenClock(T0))
    jobs: InMemoryJobRepository = field(factory=InMemoryJobRepository)
    dispatcher: InMemoryDispatcher = field(factory=InMemoryDispatcher)
    wakeup: InMemoryWakeup = field(factory=InMemoryWakeup)
    tasks: DictRegistry = field(factory=sample_tasks)
    schedules: InMemoryScheduleRepository = field(
        default=Factory(lambda self: InMemoryScheduleRepository(self.jobs), takes_self=True))

    def submit(self) -> SubmitJobs:
        return SubmitJobs(self.jobs, self.dispatcher, self.clock, self.tasks, self.wakeup)

    def tick(self) -> SchedulerTick:
        return SchedulerTick(self.jobs, self.schedules, self.dispatcher, self.clock)

    def cancel(self) -> CancelJob:
        return CancelJob(self.jobs, self.clock)

    def worker(self, **settings: Any) -> Worker:
        values: dict[str, Any] = {"worker_id": "w1", "pop_timeout": 0.01, "heartbeat_seconds": 0.02}
        values.update(settings)
        return Worker(self.jobs, self.dispatcher, self.tasks, self.clock, WorkerSettings(**values))


@contextlib.asynccontextmanager
async def working(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)


async def settle(stack: Stack, job_id: str, *states: State, seconds: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (await stack.jobs.get(job_id)).state not in states:
        assert loop.time() < end, f"job stayed {(await stack.jobs.get(job_id)).state}"
        await asyncio.sleep(0.005)


def patient_task(stack: Stack) -> asyncio.Event:
    """Register `patient`, a handler that waits 30 s unless stopped; the event is set when it stops."""
    stopped = asyncio.Event()

    async def patient(payload: dict[str, object], ctx: object) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    stack.tasks.handlers["patient"] = patient
    return stopped
