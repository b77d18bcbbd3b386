"""The worker use case on memory adapters: outcomes, retries, timeouts, cancellation, fencing, draining."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from adapters.memory.cancellations import InMemoryCancellations
from application.manage_jobs import CancelJob
from application.ports import Finished
from application.worker import Worker, WorkerSettings
from domain.errors import Unavailable
from domain.job import JobSpec, Outcome, State
from domain.retry import Backoff
from tests.unit.fakes import Stack, patient_task, settle, working


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


async def test_jobs_claimed_together_each_end_at_their_own_timeout() -> None:
    stack = Stack()
    slow = await submit(stack, task="sleep", payload={"seconds": 30}, timeout_seconds=0.05, max_attempts=1)
    patient = await submit(stack, task="sleep", payload={"seconds": 0.2}, timeout_seconds=30)
    stuck = await submit(stack, task="sleep", payload={"seconds": 30}, timeout_seconds=0.3, max_attempts=1)
    async with working(stack.worker(concurrency=3)):
        await settle(stack, slow, State.FAILED)
        await settle(stack, patient, State.SUCCEEDED)
        await settle(stack, stuck, State.FAILED)
    for job_id in (slow, stuck):
        [run] = await stack.jobs.runs(job_id)
        assert run.outcome is Outcome.TIMEOUT and run.error is not None and "timed out after" in run.error


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
    stopped = patient_task(stack)
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


class Flaky:
    """The memory repository behind a switch: while `down`, the worker's calls fail as in an outage; `poison`
    names jobs whose outcome the store rejects (as PostgreSQL rejects a row it cannot hold)."""

    def __init__(self, jobs: object) -> None:
        self.jobs = jobs
        self.down = False
        self.poison: set[str] = set()
        self.failures = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.jobs, name)

    def _check(self) -> None:
        if self.down:
            self.failures += 1
            raise Unavailable("the database is down (test)")

    async def claim(self, *args: object, **kwargs: object) -> object:
        self._check()
        return await self.jobs.claim(*args, **kwargs)  # type: ignore[attr-defined]

    async def renew(self, *args: object, **kwargs: object) -> object:
        self._check()
        return await self.jobs.renew(*args, **kwargs)  # type: ignore[attr-defined]

    async def finish(self, outcomes: list[Finished], *, now: object, limited: object = ()) -> object:
        self._check()
        if any(item.job.id in self.poison for item in outcomes):
            raise ValueError("invalid input syntax for type json (test)")
        return await self.jobs.finish(outcomes, now=now, limited=limited)  # type: ignore[attr-defined]


def flaky_worker(stack: Stack, flaky: Flaky, **settings: object) -> Worker:
    values: dict[str, object] = {"worker_id": "w1", "pop_timeout": 0.01, "heartbeat_seconds": 0.02,
                                 "first_pause": 0.01, "max_pause": 0.02}
    values.update(settings)
    return Worker(flaky, stack.dispatcher, stack.tasks, stack.clock, WorkerSettings(**values))  # type: ignore[arg-type]


async def test_a_job_that_outlives_its_first_lease_is_recorded_under_the_renewed_one() -> None:
    stack = Stack()
    gate = asyncio.Event()

    async def long(payload: dict[str, object], ctx: object) -> str:
        await gate.wait()
        return "done"

    stack.tasks.handlers["long"] = long
    job_id = await submit(stack, task="long")
    async with working(stack.worker()):
        await settle(stack, job_id, State.RUNNING)
        for _ in range(3):  # 60 s in all, each step within the 30 s lease, each followed by a heartbeat
            before = (await stack.jobs.get(job_id)).lease
            stack.clock.advance(20)
            await renewed(stack, job_id, before)
        gate.set()
        await settle(stack, job_id, State.SUCCEEDED)
    assert (await stack.jobs.get(job_id)).result == "done"


async def test_the_worker_rides_out_an_outage_of_its_repository() -> None:
    stack = Stack()
    flaky = Flaky(stack.jobs)
    gate = asyncio.Event()

    async def waits(payload: dict[str, object], ctx: object) -> str:
        await gate.wait()
        return "ok"

    stack.tasks.handlers["waits"] = waits
    first = await submit(stack, task="waits")
    async with working(flaky_worker(stack, flaky)) as worker:
        await settle(stack, first, State.RUNNING)
        flaky.down = True
        gate.set()  # the outcome waits in the outbox while claims, heartbeats and writes fail
        second = await submit(stack, task="noop")
        await until(lambda: flaky.failures >= 10)
        assert (await stack.jobs.get(first)).state is State.RUNNING and worker.outbox
        flaky.down = False
        await settle(stack, first, State.SUCCEEDED)
        await settle(stack, second, State.SUCCEEDED)


async def test_an_outcome_the_store_rejects_does_not_block_the_others() -> None:
    stack = Stack()
    flaky = Flaky(stack.jobs)
    ids = [await submit(stack, task="noop") for _ in range(5)]
    flaky.poison = {ids[2]}
    async with working(flaky_worker(stack, flaky, flush_window=0.05)):
        for job_id in ids[:2] + ids[3:]:
            await settle(stack, job_id, State.SUCCEEDED)
    assert (await stack.jobs.get(ids[2])).state is State.RUNNING  # dropped: the scheduler will rescue it


async def test_a_result_postgresql_cannot_store_fails_the_job_for_good() -> None:
    stack = Stack()
    stack.tasks.handlers["nan"] = lambda payload, ctx: {"x": float("nan")}
    stack.tasks.handlers["nul"] = lambda payload, ctx: ["a\x00b"]
    nan, nul = await submit(stack, task="nan"), await submit(stack, task="nul")
    async with working(stack.worker()):
        await settle(stack, nan, State.FAILED)
        await settle(stack, nul, State.FAILED)
    assert "not JSON" in ((await stack.jobs.get(nan)).last_error or "")
    assert "NUL" in ((await stack.jobs.get(nul)).last_error or "")


async def test_a_timeout_error_raised_by_the_handler_is_an_ordinary_failure() -> None:
    stack = Stack()

    async def gives_up(payload: dict[str, object], ctx: object) -> None:
        raise TimeoutError("the upstream did not answer")

    stack.tasks.handlers["gives_up"] = gives_up
    job_id = await submit(stack, task="gives_up", max_attempts=1)
    async with working(stack.worker()):
        await settle(stack, job_id, State.FAILED)
    [run] = await stack.jobs.runs(job_id)
    assert run.outcome is Outcome.FAILED and run.error == "TimeoutError: the upstream did not answer"


async def test_a_cancellation_notice_stops_the_handler_without_waiting_for_the_heartbeat() -> None:
    stack = Stack()
    notices = InMemoryCancellations()
    stopped = patient_task(stack)
    job_id = await submit(stack, task="patient")
    settings = WorkerSettings(worker_id="w1", pop_timeout=0.01, heartbeat_seconds=60)
    worker = Worker(stack.jobs, stack.dispatcher, stack.tasks, stack.clock, settings, cancellations=notices)
    async with working(worker):
        await settle(stack, job_id, State.RUNNING)
        await CancelJob(stack.jobs, stack.clock, notices)(job_id)
        await asyncio.wait_for(stopped.wait(), 3)  # the heartbeat alone would take 60 s
    assert [r.outcome for r in await stack.jobs.runs(job_id)] == [Outcome.CANCELLED]


async def renewed(stack: Stack, job_id: str, before: object, seconds: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (await stack.jobs.get(job_id)).lease == before:
        assert loop.time() < end, "the lease was never renewed"
        await asyncio.sleep(0.005)


async def until(condition, seconds: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not condition():
        assert loop.time() < end, "condition never held"
        await asyncio.sleep(0.005)


async def test_a_sync_handler_heartbeat_renews_the_lease_at_once() -> None:
    stack = Stack()
    proceed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_debug(True)  # debug mode refuses loop calls from another thread, as they are unsafe

    def beating(payload: dict[str, object], ctx: object) -> str:
        stack.clock.advance(5)
        ctx.heartbeat()  # type: ignore[attr-defined]
        asyncio.run_coroutine_threadsafe(proceed.wait(), loop).result(5)
        return "ok"

    stack.tasks.handlers["beating"] = beating
    job_id = await submit(stack, task="beating")
    async with working(stack.worker(heartbeat_seconds=60)):
        await settle(stack, job_id, State.RUNNING)
        for _ in range(200):
            lease = (await stack.jobs.get(job_id)).lease
            if lease is not None and lease.expires_at == stack.clock.now() + timedelta(seconds=30):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the heartbeat asked from a thread never renewed the lease")
        proceed.set()
        await settle(stack, job_id, State.SUCCEEDED)


class SlowWrites(Flaky):
    """Finishes that commit, then take a while to answer: a stop arriving meanwhile must not cancel them."""

    def __init__(self, jobs: object) -> None:
        super().__init__(jobs)
        self.writing = asyncio.Event()
        self.written: list[str] = []

    async def finish(self, outcomes: list[Finished], *, now: object, limited: object = ()) -> object:
        recorded = await self.jobs.finish(outcomes, now=now, limited=limited)  # type: ignore[attr-defined]
        self.written += [item.job.id for item in outcomes]
        self.writing.set()
        await asyncio.sleep(0.2)
        return recorded


async def test_a_stop_during_an_outcome_write_lets_it_end_and_writes_nothing_twice() -> None:
    stack = Stack()
    slow = SlowWrites(stack.jobs)
    job_id = await submit(stack, task="noop")
    worker = flaky_worker(stack, slow)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(slow.writing.wait(), 3)
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert slow.written == [job_id]  # written once: not cancelled mid-way, then made again at exit and refused
    assert (await stack.jobs.get(job_id)).state is State.SUCCEEDED and worker.outbox == []


class AnswerLost(Flaky):
    """A claim that commits, then fails as if the connection died before its answer came back (once)."""

    def __init__(self, jobs: object) -> None:
        super().__init__(jobs)
        self.lose_next = True

    async def claim(self, *args: object, **kwargs: object) -> object:
        claimed = await self.jobs.claim(*args, **kwargs)  # type: ignore[attr-defined]
        if claimed and self.lose_next:
            self.lose_next = False
            raise Unavailable("connection lost while the claim committed (test)")
        return claimed


async def test_jobs_of_a_claim_whose_answer_was_lost_run_at_once_under_that_claim() -> None:
    stack = Stack()
    ids = [await submit(stack, task="noop") for _ in range(3)]
    answer_lost = AnswerLost(stack.jobs)
    async with working(flaky_worker(stack, answer_lost)):
        for job_id in ids:
            await settle(stack, job_id, State.SUCCEEDED)
    assert not answer_lost.lose_next
    for job_id in ids:  # not left to their leases' expiry: no lost attempt, no second attempt
        assert [(r.attempt, r.outcome) for r in await stack.jobs.runs(job_id)] == [(1, Outcome.SUCCEEDED)]


class WriteWaitsClaimLost(Flaky):
    """Finishes that wait for `release` before they commit, and, once armed, a claim that commits and then fails
    as if its answer were lost."""

    def __init__(self, jobs: object) -> None:
        super().__init__(jobs)
        self.writing, self.release = asyncio.Event(), asyncio.Event()
        self.lose_next = False

    async def finish(self, outcomes: list[Finished], *, now: object, limited: object = ()) -> object:
        self.writing.set()
        await self.release.wait()
        return await self.jobs.finish(outcomes, now=now, limited=limited)  # type: ignore[attr-defined]

    async def claim(self, *args: object, **kwargs: object) -> object:
        claimed = await self.jobs.claim(*args, **kwargs)  # type: ignore[attr-defined]
        if self.lose_next:
            self.lose_next = False
            raise Unavailable("connection lost while the claim committed (test)")
        return claimed


async def test_a_job_whose_outcome_is_being_written_is_not_adopted_and_run_again() -> None:
    stack = Stack()
    calls: list[str] = []

    def counted(payload: dict[str, object], ctx: object) -> str:
        calls.append("ran")
        return "ok"

    stack.tasks.handlers["counted"] = counted
    job_id = await submit(stack, task="counted")
    store = WriteWaitsClaimLost(stack.jobs)
    async with working(flaky_worker(stack, store)) as worker:
        await asyncio.wait_for(store.writing.wait(), 3)  # ran; its outcome waits in the write, the job running
        store.lose_next = True
        await stack.dispatcher.push([await stack.jobs.get(job_id)])  # dispatched again (a re-dispatch)
        await until(lambda: not store.lose_next)  # the duplicate's claim failed; the retry looks for orphans
        await asyncio.sleep(0.05)
        assert worker.held == {}
        store.release.set()
        await settle(stack, job_id, State.SUCCEEDED)
    assert calls == ["ran"]
