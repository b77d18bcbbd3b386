"""The use cases report to the Metrics port: once per batch and label set for counters, once per job for
histograms; a repeated idempotency key, a refused outcome or an idle tick counts nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from attrs import Factory, define

from adapters.memory.clock import SystemClock
from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.metrics import RecordingMetrics
from application.ports import QueueStats
from application.scheduler import SchedulerLoop, SchedulerTick
from application.submit_jobs import SubmitJobs
from application.worker import Worker, WorkerSettings
from domain.job import JobSpec, State
from tests.unit.fakes import Stack, settle, working


def submit_jobs(stack: Stack, metrics: RecordingMetrics) -> SubmitJobs:
    return SubmitJobs(stack.jobs, stack.dispatcher, stack.clock, stack.tasks, stack.wakeup, metrics)


def tick(stack: Stack, metrics: RecordingMetrics) -> SchedulerTick:
    return SchedulerTick(stack.jobs, stack.schedules, stack.dispatcher, stack.clock, metrics=metrics)


def worker(stack: Stack, metrics: RecordingMetrics) -> Worker:
    settings = WorkerSettings(worker_id="w1", pop_timeout=0.01, heartbeat_seconds=0.02)
    return Worker(stack.jobs, stack.dispatcher, stack.tasks, stack.clock, settings, metrics)


async def test_a_batch_is_counted_once_per_queue_and_task_and_a_repeated_key_not_at_all() -> None:
    stack, metrics = Stack(), RecordingMetrics()
    specs = [JobSpec(task="noop", queue="a") for _ in range(500)] + [JobSpec(task="fail", queue="b"),
                                                                     JobSpec(task="noop", idempotency_key="k")]
    await submit_jobs(stack, metrics)(specs)
    await submit_jobs(stack, metrics)([JobSpec(task="noop", idempotency_key="k")])
    assert metrics.counters == {("submitted", "a", "noop"): 500, ("submitted", "b", "fail"): 1,
                                ("submitted", "default", "noop"): 1}
    assert metrics.calls["submitted"] == 3


async def test_the_tick_reports_promotions_redispatches_and_its_duration() -> None:
    stack, metrics = Stack(), RecordingMetrics()
    later = stack.clock.now() + timedelta(seconds=5)
    await submit_jobs(stack, metrics)([JobSpec(task="noop", run_at=later) for _ in range(3)])
    await submit_jobs(stack, metrics)([JobSpec(task="noop")])
    await stack.dispatcher.pop(["default"], limit=10, timeout=0)  # the immediate job's dispatch is lost
    await tick(stack, metrics)()
    assert metrics.total("promoted") == 0 and metrics.total("redispatched") == 0
    stack.clock.advance(31)
    await tick(stack, metrics)()
    assert metrics.total("promoted") == 3 and metrics.total("redispatched") == 1
    assert len(metrics.observations["tick_duration",]) == 2


async def test_a_rescued_lease_counts_as_a_rescue_and_a_lost_attempt() -> None:
    stack, metrics = Stack(), RecordingMetrics()
    [done] = await submit_jobs(stack, metrics)([JobSpec(task="noop", queue="q")])
    await stack.jobs.claim([done.job.id], worker_id="gone", now=stack.clock.now(), lease_seconds=30)
    stack.clock.advance(31)
    await tick(stack, metrics)()
    assert metrics.total("rescued") == 1
    assert metrics.counters["finished", "q", "noop", "lost"] == 1
    assert metrics.observations["run_duration", "noop"] == [31.0]


async def test_the_worker_reports_claims_lateness_outcomes_and_run_durations() -> None:
    stack, metrics = Stack(clock=SystemClock()), RecordingMetrics()  # type: ignore[arg-type]
    ok = [await _one(stack, task="noop") for _ in range(3)]
    bad = await _one(stack, task="fail", payload={"permanent": True})
    async with working(worker(stack, metrics)):
        for job_id in [*ok, bad]:
            await settle(stack, job_id, State.SUCCEEDED, State.FAILED)
        await _until(lambda: metrics.total("finished") == 4)
    assert metrics.counters["claimed", "default"] == 4
    assert metrics.counters["finished", "default", "noop", "succeeded"] == 3
    assert metrics.counters["finished", "default", "fail", "failed"] == 1
    assert len(metrics.observations["run_duration", "noop"]) == 3
    assert len(metrics.observations["lateness", "default"]) == 4
    assert all(seconds >= 0 for seconds in metrics.observations["lateness", "default"])


async def test_an_outcome_refused_by_the_fence_is_not_counted() -> None:
    stack, metrics = Stack(), RecordingMetrics()
    ran: list[str] = []

    def outlive_the_lease(payload: dict[str, object], ctx: object) -> None:
        stack.clock.advance(31)  # the lease expires before the outcome reaches the repository
        ran.append("yes")

    stack.tasks.handlers["slow"] = outlive_the_lease
    job_id = await _one(stack, task="slow")
    settings = WorkerSettings(worker_id="w1", pop_timeout=0.01, heartbeat_seconds=10)
    async with working(Worker(stack.jobs, stack.dispatcher, stack.tasks, stack.clock, settings, metrics)):
        await _until(lambda: ran == ["yes"])
    assert (await stack.jobs.get(job_id)).state is State.RUNNING  # refused: the scheduler will rescue it
    assert metrics.counters["claimed", "default"] == 1 and metrics.total("finished") == 0


async def test_the_loop_refreshes_the_queue_gauges() -> None:
    stack, metrics = Stack(clock=SystemClock()), RecordingMetrics()  # type: ignore[arg-type]
    await submit_jobs(stack, metrics)([JobSpec(task="noop", queue="mail"), JobSpec(task="noop", queue="mail")])
    loop = SchedulerLoop(tick(stack, metrics), stack.jobs, stack.schedules, stack.wakeup, stack.clock,
                         max_sleep=0.01, stats_every=0.0)
    runner = asyncio.create_task(loop.run())
    await _until(lambda: metrics.calls["queue_stats"] >= 1)
    loop.stop()
    await asyncio.wait_for(runner, 2)
    assert metrics.gauges["depth", "mail", "queued"] == 2
    assert metrics.gauges["oldest_age", "mail"] >= 0


async def test_the_loop_reports_no_gauges_unless_asked() -> None:
    stack, metrics = Stack(clock=SystemClock()), RecordingMetrics()  # type: ignore[arg-type]
    loop = SchedulerLoop(tick(stack, metrics), stack.jobs, stack.schedules, stack.wakeup, stack.clock,
                         max_sleep=0.01)
    runner = asyncio.create_task(loop.run())
    await _until(lambda: loop.ticks >= 3)
    loop.stop()
    await asyncio.wait_for(runner, 2)
    assert metrics.calls["queue_stats"] == 0


async def _one(stack: Stack, **spec: object) -> str:
    [done] = await stack.submit()([JobSpec(**spec)], prefix=None)  # type: ignore[arg-type]
    return done.job.id


async def _until(condition, seconds: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not condition():
        assert loop.time() < end, "the condition never held"
        await asyncio.sleep(0.005)


@define
class CountingJobs:
    """The memory repository, recording what each queue_stats call asked for."""

    jobs: InMemoryJobRepository
    asked: list[bool] = Factory(list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.jobs, name)

    async def queue_stats(self, now: datetime, *, totals: bool = True) -> list[QueueStats]:
        self.asked.append(totals)
        return await self.jobs.queue_stats(now, totals=totals)


async def test_the_loop_counts_every_state_only_every_totals_every_and_keeps_the_last_counts() -> None:
    stack, metrics = Stack(clock=SystemClock()), RecordingMetrics()  # type: ignore[arg-type]
    later = stack.clock.now() + timedelta(hours=1)
    await submit_jobs(stack, metrics)([JobSpec(task="noop", queue="mail"), JobSpec(task="noop", queue="later",
                                                                                   run_at=later)])
    jobs = CountingJobs(stack.jobs)
    loop = SchedulerLoop(tick(stack, metrics), jobs, stack.schedules, stack.wakeup, stack.clock,  # type: ignore[arg-type]
                         max_sleep=0.01, stats_every=0.0, totals_every=3600)
    runner = asyncio.create_task(loop.run())
    await _until(lambda: len(jobs.asked) >= 1)
    await submit_jobs(stack, metrics)([JobSpec(task="noop", queue="mail")])
    await _until(lambda: metrics.gauges.get(("depth", "mail", "queued")) == 2)
    loop.stop()
    await asyncio.wait_for(runner, 2)
    assert jobs.asked[0] and not any(jobs.asked[1:]) and len(jobs.asked) >= 2
    assert metrics.gauges["depth", "mail", "queued"] == 2  # in flight: counted at every refresh
    assert metrics.gauges["depth", "later", "scheduled"] == 1 and metrics.gauges["depth", "later", "queued"] == 0
