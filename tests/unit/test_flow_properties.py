"""Flow control as a property (hypothesis): whatever the interleaving of submits, promotions, pops, claims of stale
or duplicate ids, outcomes, lost workers, cancels and runtime changes of queue settings, no claim lets more jobs of a
key or of a queue run than its limit, a paused queue starts nothing, and no held job is stranded: once the sweep
has run past the dispatch timeout, a held job's key or queue is full (counting dispatched jobs as well as running
ones: a wake-up dispatches as many as there is room for, and they start when popped)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from adapters.memory.queue_settings import InMemoryQueueSettingsRepository
from application.ports import Finished
from application.submit_jobs import dispatch
from domain.errors import Conflict, LeaseLost
from domain.flow import QueueSettings, order
from domain.ids import uuid7
from domain.job import Hold, Job, JobSpec, State
from tests.unit.fakes import Stack

LIMITS = {"a": 1, "b": 2}
QUEUES = ("default", "q2")
LEASE = 30


def live(job: Job, now) -> bool:  # type: ignore[no-untyped-def]
    return job.state is State.RUNNING and job.lease is not None and job.lease.expires_at > now


class FlowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stack = Stack()
        self.queues = InMemoryQueueSettingsRepository(self.stack.jobs)
        self.loop = asyncio.new_event_loop()
        self.tokens: dict[str, int] = {}
        self.made = 0

    def teardown(self) -> None:
        self.loop.close()

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @property
    def now(self):  # type: ignore[no-untyped-def]
        return self.stack.clock.now()

    def ordered(self) -> list[Job]:
        """The jobs in start order. Jobs of one batch differ only by their random ids, which also decide which of
        them a limit lets through; drawing by place in this order makes a replay of the steps draw the same jobs."""
        return sorted(self.stack.jobs.rows.values(), key=order)

    def running(self, match) -> int:  # type: ignore[no-untyped-def]
        return sum(1 for j in self.stack.jobs.rows.values() if live(j, self.now) and match(j))

    @rule(key=st.sampled_from(["a", "b", None]), n=st.integers(1, 4), queue=st.sampled_from(QUEUES),
          priority=st.integers(0, 2), delay=st.sampled_from([0, 0, 5]))
    def submit(self, key: str | None, n: int, queue: str, priority: int, delay: int) -> None:
        spec = JobSpec(task="noop", queue=queue, priority=priority, concurrency_key=key,
                       concurrency_limit=LIMITS.get(key or "", 1), run_at=self.now + timedelta(seconds=delay))
        # As SubmitJobs does, but with ids that grow in creation order: which job of a batch a limit lets through
        # then never hangs on random ids, so a replay of the steps replays the same states.
        made = []
        for _ in range(n):
            self.made += 1
            made.append(Job.create(uuid7(self.now, self.made.to_bytes(10, "big")), spec, now=self.now))
        submitted = self.run(self.stack.jobs.add(made))
        self.run(dispatch(self.stack.dispatcher, [s.job for s in submitted if s.job.state is State.QUEUED]))

    @rule(seconds=st.sampled_from([1, 5, 31]))
    def time_passes(self, seconds: int) -> None:
        self.stack.clock.advance(seconds)

    @rule()
    def tick(self) -> None:
        self.run(self.stack.tick()())

    @rule(queue=st.sampled_from(QUEUES), max_running=st.sampled_from([None, 1, 2, 3]), paused=st.booleans())
    def configure(self, queue: str, max_running: int | None, paused: bool) -> None:
        current = self.run(self.queues.get(queue))
        self.run(self.queues.upsert(current.change(now=self.now, max_running=max_running, paused=paused)))

    @rule(limit=st.integers(1, 4), queue=st.sampled_from(QUEUES))
    def pop_and_claim(self, limit: int, queue: str) -> None:
        ids = self.run(self.stack.dispatcher.pop([queue], limit=limit, timeout=0))
        self._claim(ids)

    @rule(data=st.data())
    def claim_stale_or_duplicate_ids(self, data: st.DataObject) -> None:
        queued = [j.id for j in self.ordered() if j.state is State.QUEUED]
        if queued:  # ids are random: draw places, so that a replay draws the same way
            places = data.draw(st.lists(st.integers(0, len(queued) - 1), max_size=4))
            self._claim([queued[i] for i in places])

    def _claim(self, ids: list[str]) -> None:
        started = self.run(self.stack.jobs.claim(ids, worker_id="w", now=self.now, lease_seconds=LEASE))
        for job in started:
            self.tokens[job.id] = job.version
            settings_ = self.stack.jobs.queue_settings.get(job.queue, QueueSettings(queue=job.queue))
            assert not settings_.paused, f"a job of paused queue {job.queue} started"
            if settings_.max_running is not None:
                assert self.running(lambda j, q=job.queue: j.queue == q) <= settings_.max_running
            if job.concurrency_key is not None:
                key = job.concurrency_key
                assert self.running(lambda j, k=key: j.concurrency_key == k) <= LIMITS[key]

    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data: st.DataObject, ok: bool) -> None:
        if not self.tokens:
            return
        held = [j.id for j in self.ordered() if j.id in self.tokens]
        job_id = held[data.draw(st.integers(0, len(held) - 1))]
        token = self.tokens.pop(job_id)
        job = self.stack.jobs.rows[job_id]
        try:
            new, run = (job.succeed(token=token, now=self.now) if ok
                        else job.fail(token=token, now=self.now, error="x"))
        except LeaseLost:
            return  # this worker was presumed lost: it writes nothing
        recorded = self.run(self.stack.jobs.finish([Finished(job=new, run=run)], now=self.now))
        self.run(self.stack.dispatcher.push(recorded.woken))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        jobs = [j for j in self.ordered() if not j.terminal]
        if jobs:
            job = jobs[data.draw(st.integers(0, len(jobs) - 1))]
            with contextlib.suppress(Conflict):
                self.run(self.stack.cancel()(job.id))

    @rule()
    def the_sweep_leaves_no_held_job_stranded(self) -> None:
        # Sweeps past every lease and the dispatch timeout until one changes nothing: a sweep may hold a job (a
        # promotion into a busy key, a stale dispatch in a paused queue) that the next one wakes. Then every held job
        # waits for a full key or queue.
        for _ in range(6):
            self.stack.clock.advance(31)
            report = self.run(self.stack.tick()())
            if not (report.promoted or report.rescued or report.redispatched or report.woken):
                break
        rows = self.stack.jobs.rows.values()
        for job in rows:
            if job.held_for is Hold.KEY:
                key = job.concurrency_key
                in_flight = sum(1 for j in rows if j.concurrency_key == key and self.in_flight(j))
                assert in_flight >= job.concurrency_limit, f"held job {job.id} of key {key} stranded"
            elif job.held_for is Hold.QUEUE:
                settings_ = self.stack.jobs.queue_settings.get(job.queue, QueueSettings(queue=job.queue))
                room = settings_.room(sum(1 for j in rows if j.queue == job.queue and self.in_flight(j)))
                assert room == 0, f"held job {job.id} of queue {job.queue} stranded (room {room})"

    def in_flight(self, job: Job) -> bool:
        return live(job, self.now) or (job.state is State.QUEUED and not job.held)

    @invariant()
    def keys_never_run_more_than_their_limit(self) -> None:
        for key, limit in LIMITS.items():
            assert self.running(lambda j, k=key: j.concurrency_key == k) <= limit

    @invariant()
    def only_queued_jobs_are_held(self) -> None:
        assert all(j.state is State.QUEUED for j in self.stack.jobs.rows.values() if j.held)


FlowMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestFlowProperties = FlowMachine.TestCase
