"""The worker use case on memory adapters: outcomes, retries, timeouts, cancellation, fencing, draining."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from application.worker import Worker
from domain.job import JobSpec, Outcome, State
from domain.retry import Backoff
from tests.unit.fakes import Stack


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


async def submit(stack: Stack, **spec: object) -> str:
    [done] = await stack.submit()([JobSpec(**spec)], prefix=None)  # type: ignore[arg-type]
    return done.job.id


async def test_runs_a_job_and_records_its_result_and_run() -> None:
    stack = Stack()
    job_id = await submit(stack, task="noop", payload={"a": 1})
    async with working(stack.worker()):
        await settle(stack, job_id, State.SUCCEEDED)
    job = await stack.jobs.get(job_id)
    assert job.result == {"echo": {"a": 1}} and job.attempt == 1 and job.lease is None
    [run] = await stack.jobs.runs(job_id)
    assert run.outcome is Outcome.SUCCEEDED and run.worker_id == "w1" and run.attempt == 1


async def test_a_failing_job_retries_with_backoff_then_fails_for_good() -> None:
    stack = Stack()
    job_id = await submit(stack, task="fail", max_attempts=2, backoff=Backoff(base_seconds=10, jitter=False))
    async with working(stack.worker()):
        await settle(stack, job_id, State.RETRY)
        retry = await stack.jobs.get(job_id)
        assert (retry.run_at - stack.clock.now()).total_seconds() == 10
        stack.clock.advance(10)
        assert (await stack.tick()()).promoted == 1
        await settle(stack, job_id, State.FAILED)
    runs = await stack.jobs.runs(job_id)
    assert [r.attempt for r in runs] == [1, 2] and all(r.outcome is Outcome.FAILED for r in runs)
    assert (await stack.jobs.get(job_id)).last_error == "RuntimeError: boom"


async def test_a_permanent_failure_is_not_retried() -> None:
    stack = Stack()
    job_id = await submit(stack, task="fail", payload={"permanent": True}, max_attempts=5)
    async with working(stack.worker()):
        await settle(stack, job_id, State.FAILED)
    assert (await stack.jobs.get(job_id)).attempt == 1


async def test_an_unregistered_task_fails_permanently_at_the_worker() -> None:
    stack = Stack()
    stack.tasks.known = False
    job_id = await submit(stack, task="nobody-knows", max_attempts=3)
    async with working(stack.worker()):
        await settle(stack, job_id, State.FAILED)
    assert "not registered" in ((await stack.jobs.get(job_id)).last_error or "")


async def test_the_timeout_ends_the_attempt_and_the_worker_goes_on() -> None:
    stack = Stack()
    slow = await submit(stack, task="sleep", payload={"seconds": 30}, timeout_seconds=0.05, max_attempts=1)
    quick = await submit(stack, task="noop")
    async with working(stack.worker(concurrency=1)):
        await settle(stack, slow, State.FAILED)
        await settle(stack, quick, State.SUCCEEDED)
    [run] = await stack.jobs.runs(slow)
    assert run.outcome is Outcome.TIMEOUT


async def test_sync_handlers_run_off_the_event_loop() -> None:
    stack = Stack()
    seen: list[bool] = []

    def blocking(payload: dict[str, object], ctx: object) -> str:
        try:
            asyncio.get_running_loop()
            seen.append(False)
        except RuntimeError:
            seen.append(True)
        return "ok"

    stack.tasks.handlers["blocking"] = blocking
    job_id = await submit(stack, task="blocking")
    async with working(stack.worker()):
        await settle(stack, job_id, State.SUCCEEDED)
    assert seen == [True]


async def test_cancelling_a_running_job_reaches_its_handler() -> None:
    stack = Stack()
    stopped = asyncio.Event()

    async def patient(payload: dict[str, object], ctx: object) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    stack.tasks.handlers["patient"] = patient
    job_id = await submit(stack, task="patient")
    async with working(stack.worker()) as worker:
        await settle(stack, job_id, State.RUNNING)
        await stack.cancel()(job_id)
        await asyncio.wait_for(stopped.wait(), 3)
        assert worker.held == {}
    assert (await stack.jobs.get(job_id)).state is State.CANCELLED
    assert [r.outcome for r in await stack.jobs.runs(job_id)] == [Outcome.CANCELLED]


async def test_a_worker_that_lost_its_lease_cannot_write_its_outcome() -> None:
    stack = Stack()
    gate = asyncio.Event()

    async def stuck(payload: dict[str, object], ctx: object) -> str:
        await gate.wait()
        return "late"

    stack.tasks.handlers["stuck"] = stuck
    job_id = await submit(stack, task="stuck", max_attempts=3)
    async with working(stack.worker(heartbeat_seconds=60)):
        await settle(stack, job_id, State.RUNNING)
        stack.clock.advance(31)
        assert (await stack.tick()()).rescued == 1
        gate.set()
        await asyncio.sleep(0.05)
    job = await stack.jobs.get(job_id)
    assert job.state is State.RETRY and job.result is None
    assert [r.outcome for r in await stack.jobs.runs(job_id)] == [Outcome.LOST]


async def test_drain_finishes_quick_jobs_and_releases_the_rest_without_spending_an_attempt() -> None:
    stack = Stack()
    slow = await submit(stack, task="sleep", payload={"seconds": 30})
    quick = await submit(stack, task="sleep", payload={"seconds": 0.05})
    worker = stack.worker(shutdown_grace_seconds=0.3)
    task = asyncio.create_task(worker.run())
    await settle(stack, slow, State.RUNNING)
    await settle(stack, quick, State.RUNNING)
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert (await stack.jobs.get(quick)).state is State.SUCCEEDED
    released = await stack.jobs.get(slow)
    assert released.state is State.RETRY and released.attempt == 0 and released.lease is None
    assert await stack.jobs.runs(slow) == []


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_never_runs_more_than_its_concurrency(concurrency: int) -> None:
    stack = Stack()
    running = peak = 0

    async def count(payload: dict[str, object], ctx: object) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    stack.tasks.handlers["count"] = count
    ids = [await submit(stack, task="count") for _ in range(12)]
    async with working(stack.worker(concurrency=concurrency)):
        for job_id in ids:
            await settle(stack, job_id, State.SUCCEEDED)
    assert peak == concurrency
