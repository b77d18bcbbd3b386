"""The scheduler tick and loop on memory adapters: promotion, exactly-once firing, rescue, re-dispatch."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from adapters.memory.clock import SystemClock
from application.identity import new_id
from application.ports import Finished, JobFilter
from application.scheduler import SchedulerLoop, SchedulerTick, TickSettings
from domain.errors import Conflict, LeaseLost
from domain.job import JobSpec, Outcome, State
from domain.retry import Backoff
from domain.schedule import Schedule, ScheduleSpec
from tests.unit.fakes import Stack


async def test_a_delayed_job_is_promoted_and_dispatched_at_its_time() -> None:
    stack = Stack()
    run_at = stack.clock.now() + timedelta(seconds=5)
    [done] = await stack.submit()([JobSpec(task="noop", run_at=run_at)], prefix=None)
    assert done.job.state is State.SCHEDULED and await stack.dispatcher.size("default") == 0
    stack.clock.advance(4.9)
    assert (await stack.tick()()).promoted == 0
    stack.clock.advance(0.2)
    assert (await stack.tick()()).promoted == 1
    assert await stack.dispatcher.pop(["default"], limit=10, timeout=0) == [done.job.id]


async def test_two_replicas_fire_each_occurrence_once() -> None:
    stack = Stack()
    spec = ScheduleSpec(name="every-10s", job=JobSpec(task="noop"), interval_seconds=10)
    await stack.schedules.add(Schedule.create(new_id(stack.clock.now()), spec, now=stack.clock.now()))
    first, second = stack.tick(), stack.tick()
    for _ in range(30):
        stack.clock.advance(1)
        await first()
        await second()
    fired = (await stack.jobs.list(JobFilter(), limit=1000, cursor=None)).items
    occurrences = [j.scheduled_for for j in fired]
    assert len(occurrences) == 3 and len(set(occurrences)) == 3


async def test_a_lost_dispatch_is_sent_again_after_the_timeout() -> None:
    stack = Stack()
    [done] = await stack.submit()([JobSpec(task="noop")], prefix=None)
    await stack.dispatcher.pop(["default"], limit=10, timeout=0)  # popped, then the worker died
    stack.clock.advance(29)
    assert (await stack.tick()()).redispatched == 0
    stack.clock.advance(2)
    assert (await stack.tick()()).redispatched == 1
    assert await stack.dispatcher.pop(["default"], limit=10, timeout=0) == [done.job.id]


async def test_an_expired_lease_counts_as_a_lost_attempt() -> None:
    stack = Stack()
    [done] = await stack.submit()([JobSpec(task="noop", max_attempts=1)], prefix=None)
    await stack.jobs.claim([done.job.id], worker_id="gone", now=stack.clock.now(), lease_seconds=30)
    stack.clock.advance(30)
    assert (await stack.tick()()).rescued == 1
    job = await stack.jobs.get(done.job.id)
    assert job.state is State.FAILED and job.last_error == "worker lost: lease expired"
    assert [r.outcome for r in await stack.jobs.runs(job.id)] == [Outcome.LOST]


async def test_the_loop_sleeps_until_due_and_wakes_for_a_sooner_job() -> None:
    stack = Stack(clock=SystemClock())  # type: ignore[arg-type]
    loop = SchedulerLoop(stack.tick(), stack.jobs, stack.schedules, stack.wakeup, stack.clock, max_sleep=30)
    runner = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)
    ticks = loop.ticks
    [done] = await stack.submit()([JobSpec(task="noop", run_at=stack.clock.now() + timedelta(seconds=0.2))],
                                  prefix=None)
    for _ in range(300):
        if (await stack.jobs.get(done.job.id)).state is State.QUEUED:
            break
        await asyncio.sleep(0.01)
    loop.stop()
    await stack.wakeup.notify()
    await asyncio.wait_for(runner, 2)
    assert (await stack.jobs.get(done.job.id)).state is State.QUEUED
    assert loop.ticks - ticks <= 4  # woken by the submit, then by the due time: no fixed-period polling


class JobLifecycle(RuleBasedStateMachine):
    """Random interleavings of submit, tick, claim, finish, cancel, retry and clock moves keep the
    invariants: attempt <= max_attempts, runs numbered 1..n with one per ended attempt, leases only on
    running jobs, terminal jobs untouched by workers."""

    def __init__(self) -> None:
        super().__init__()
        self.stack = Stack()
        self.loop = asyncio.new_event_loop()
        self.held: dict[str, int] = {}

    def teardown(self) -> None:
        self.loop.close()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    @rule(delay=st.sampled_from([0, 0, 3, 40]), attempts=st.integers(1, 4))
    def submit(self, delay: int, attempts: int) -> None:
        spec = JobSpec(task="noop", run_at=self.stack.clock.now() + timedelta(seconds=delay),
                       max_attempts=attempts, backoff=Backoff(base_seconds=2, jitter=True))
        self.run(self.stack.submit()([spec], prefix=None))

    @rule(seconds=st.sampled_from([1, 5, 31]))
    def time_passes(self, seconds: int) -> None:
        self.stack.clock.advance(seconds)

    @rule()
    def tick(self) -> None:
        self.run(self.stack.tick()())

    @rule(limit=st.integers(1, 3))
    def claim(self, limit: int) -> None:
        ids = self.run(self.stack.dispatcher.pop(["default"], limit=limit, timeout=0))
        for job in self.run(self.stack.jobs.claim(ids, worker_id="w", now=self.stack.clock.now(),
                                                  lease_seconds=30)):
            self.held[job.id] = job.version

    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data: st.DataObject, ok: bool) -> None:
        if not self.held:
            return
        job_id = list(self.held)[data.draw(st.integers(0, len(self.held) - 1))]  # ids are random: pick by place
        token = self.held.pop(job_id)
        claimed = self.run(self.stack.jobs.get(job_id))
        if claimed.version != token or claimed.state is not State.RUNNING:
            return  # already moved on; the fenced write below would be refused, as tested elsewhere
        now = self.stack.clock.now()
        try:
            new, run = claimed.succeed(token=token, now=now) if ok else claimed.fail(token=token, now=now, error="x")
        except LeaseLost:
            return  # the worker's own clock says the lease is gone: it writes nothing
        self.run(self.stack.jobs.finish([Finished(job=new, run=run)], now=now))

    @rule(data=st.data())
    def cancel_or_retry(self, data: st.DataObject) -> None:
        jobs = list(self.stack.jobs.rows.values())  # in submission order, so a replay draws the same job
        if not jobs:
            return
        job = jobs[data.draw(st.integers(0, len(jobs) - 1))]
        try:
            if job.terminal:
                self.run(self.stack.jobs.save(job.retry_now(now=self.stack.clock.now())))
            else:
                self.run(self.stack.cancel()(job.id))
        except Conflict:
            pass

    @invariant()
    def attempts_and_history_agree(self) -> None:
        for job in self.stack.jobs.rows.values():
            runs = self.stack.jobs.history.get(job.id, [])
            assert 0 <= job.attempt <= job.max_attempts
            assert [r.attempt for r in runs] == sorted(r.attempt for r in runs)
            assert len(runs) <= job.attempt
            if job.state is State.RUNNING:
                assert job.lease is not None and len(runs) == job.attempt - 1
            else:
                assert job.lease is None
            if job.state is State.SUCCEEDED:
                assert len(runs) == job.attempt and runs[-1].outcome is Outcome.SUCCEEDED
            if job.state is State.FAILED:
                assert len(runs) == job.attempt and runs[-1].outcome in (Outcome.FAILED, Outcome.LOST)


TestJobLifecycle = JobLifecycle.TestCase
TestJobLifecycle.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


async def test_a_sweep_prunes_many_batches_of_old_finished_jobs() -> None:
    stack = Stack()
    specs = [JobSpec(task="noop") for _ in range(2500)]
    await stack.submit()(specs, prefix=None)
    claimed = await stack.jobs.claim(list(stack.jobs.rows), worker_id="w", now=stack.clock.now(), lease_seconds=30)
    done = [Finished(job=job.succeed(token=job.version, now=stack.clock.now())[0], run=None) for job in claimed]
    await stack.jobs.finish(done, now=stack.clock.now())
    stack.clock.advance(8 * 86400)
    tick = SchedulerTick(stack.jobs, stack.schedules, stack.dispatcher, stack.clock,
                         TickSettings(prune_batch=1000, prune_batches_per_sweep=2))
    assert (await tick()).pruned == 2000
    assert (await tick()).pruned == 500
