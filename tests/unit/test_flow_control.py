"""Flow control on the memory adapters (SPEC §6): the domain rule, queue settings, the use cases that change and
show them, the worker's gate (paused queues, the shared token bucket) and a worker obeying a key's limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.memory.dispatcher import InMemoryDispatcher
from adapters.memory.queue_settings import InMemoryQueueSettingsRepository
from application.manage_jobs import QueueOverview
from application.manage_queues import UpdateQueue
from application.ports import Finished
from application.queue_gate import QueueGate
from domain.errors import IllegalTransition, InvalidInput
from domain.flow import QueueSettings, admit
from domain.job import Hold, Job, JobSpec, State
from tests.contracts.repositories import T0, at, make_job
from tests.unit.fakes import Stack, working

# -- the domain -----------------------------------------------------------------------------------------------


def test_settings_refuse_bad_limits_and_unknown_fields() -> None:
    settings = QueueSettings(queue="q")
    for changes in ({"max_running": 0}, {"max_running": -3}, {"max_per_second": 0.0}, {"max_per_second": -1.0},
                    {"max_per_second": float("nan")}, {"max_per_second": float("inf")}, {"speed": 3}):
        with pytest.raises(InvalidInput):
            settings.change(now=T0, **changes)
    with pytest.raises(InvalidInput, match="queue"):
        QueueSettings(queue="no spaces").change(now=T0, paused=True)
    changed = settings.change(now=T0, max_running=3, max_per_second=0.5)
    assert changed.updated_at == T0 and changed.limits_starts and changed.burst == 1.0
    assert changed.room(1) == 2 and changed.room(5) == 0
    assert changed.change(now=T0, paused=True).room(0) == 0
    assert QueueSettings(queue="q").room(100) is None and not QueueSettings(queue="q").limits_starts


def test_only_a_queued_job_is_held_and_any_transition_ends_the_hold() -> None:
    job = make_job(concurrency_key="k")
    held = job.hold(now=at(1), reason=Hold.KEY)
    assert held.held and held.held_at == at(1) and held.version == job.version
    unheld = held.unhold(now=at(2))
    assert not unheld.held and unheld.dispatched_at == at(2)
    assert not held.cancel(now=at(3))[0].held
    assert not held.start(worker_id="w", now=at(3), lease_seconds=30).held
    with pytest.raises(IllegalTransition):
        make_job(run_at=at(60)).hold(now=at(1), reason=Hold.QUEUE)


def test_admit_takes_priority_then_run_at_within_key_limits_then_queue_room() -> None:
    a = [make_job(at(i), concurrency_key="a", concurrency_limit=2) for i in range(3)]
    urgent = make_job(at(9), concurrency_key="a", concurrency_limit=2, priority=9)
    free = [make_job(at(i), queue="q") for i in range(3)]
    admitted, held = admit([*a, urgent, *free], key_busy={"a": 1}, queue_room={"q": 2})
    assert [j.id for j in admitted] == [urgent.id, free[0].id, free[1].id]
    assert {j.id: reason for j, reason in held} == {a[0].id: Hold.KEY, a[1].id: Hold.KEY, a[2].id: Hold.KEY,
                                                   free[2].id: Hold.QUEUE}


# -- use cases ------------------------------------------------------------------------------------------------


def update_queue(stack: Stack) -> UpdateQueue:
    return UpdateQueue(InMemoryQueueSettingsRepository(stack.jobs), stack.jobs, stack.dispatcher, stack.clock)


async def test_a_queue_change_is_partial_and_a_resume_dispatches_what_the_pause_held() -> None:
    stack = Stack()
    change = update_queue(stack)
    paused = await change("mail", {"paused": True, "max_running": 4})
    assert (paused.paused, paused.max_running, paused.max_per_second) == (True, 4, None)
    [submitted] = await stack.submit()([JobSpec(task="noop", queue="mail")], prefix=None)
    [popped] = await stack.dispatcher.pop(["mail"], limit=10, timeout=0)
    assert await stack.jobs.claim([popped], worker_id="w", now=T0, lease_seconds=30) == []
    assert stack.jobs.rows[popped].held_for is Hold.QUEUE
    resumed = await change("mail", {"paused": False})
    assert (resumed.paused, resumed.max_running) == (False, 4)
    assert await stack.dispatcher.pop(["mail"], limit=10, timeout=0) == [submitted.job.id]
    with pytest.raises(InvalidInput):
        await change("mail", {"max_running": 0})
    assert (await InMemoryQueueSettingsRepository(stack.jobs).get("mail")).max_running == 4


async def test_the_overview_shows_settings_and_configured_queues_without_jobs() -> None:
    stack = Stack()
    await stack.submit()([JobSpec(task="noop")], prefix=None)
    await update_queue(stack)("idle", {"max_per_second": 5.0})
    overview = await QueueOverview(stack.jobs, stack.clock, InMemoryQueueSettingsRepository(stack.jobs))()
    by_queue = {s.queue: s for s in overview}
    assert by_queue["default"].settings is None and by_queue["default"].counts["queued"] == 1
    assert by_queue["idle"].settings is not None and by_queue["idle"].settings.max_per_second == 5.0
    assert by_queue["idle"].counts["queued"] == 0


async def test_held_jobs_are_not_pushed_and_a_finish_pushes_the_next_one() -> None:
    stack = Stack()
    specs = [JobSpec(task="noop", concurrency_key="k") for _ in range(3)]
    submitted = [s.job for s in await stack.submit()(specs, prefix=None)]
    [free] = [j for j in submitted if not j.held]  # which one of the batch: the first in start order (ids)
    assert sorted(str(j.held_for) for j in submitted) == ["None", "key", "key"]
    assert await stack.dispatcher.pop(["default"], limit=10, timeout=0) == [free.id]
    [started] = await stack.jobs.claim([free.id], worker_id="w", now=T0, lease_seconds=30)
    recorded = await stack.jobs.finish([Finished(job=started.succeed(token=started.version, now=T0)[0], run=None)],
                                       now=T0)
    [woken] = recorded.woken
    assert woken.id in {j.id for j in submitted if j.held} and not stack.jobs.rows[woken.id].held


# -- the worker's gate ----------------------------------------------------------------------------------------


def gate(stack: Stack, *queues: str) -> QueueGate:
    return QueueGate(InMemoryQueueSettingsRepository(stack.jobs), queues, poll=0.001)


async def push(stack: Stack, n: int, queue: str = "default") -> list[Job]:
    jobs = [make_job(queue=queue) for _ in range(n)]
    await stack.dispatcher.push(jobs)
    return jobs


async def test_the_gate_skips_paused_queues() -> None:
    stack = Stack()
    await update_queue(stack)("default", {"paused": True})
    g = gate(stack, "default", "other")
    await g.refresh()
    await push(stack, 2)
    [other] = await push(stack, 1, "other")
    assert g.limited == frozenset({"default"})
    assert await g.pop(stack.dispatcher, limit=10, timeout=0.01) == [other.id]
    assert await g.pop(stack.dispatcher, limit=10, timeout=0.01) == []
    assert await stack.dispatcher.size("default") == 2


class Ticks:
    """The dispatcher's clock (its token buckets refill on it), moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_gate_pops_a_rate_limited_queue_only_for_the_tokens_it_gets() -> None:
    ticks = Ticks()
    stack = Stack(dispatcher=InMemoryDispatcher(clock=ticks))
    await update_queue(stack)("default", {"max_per_second": 2.0})
    g = gate(stack, "default")
    await g.refresh()
    made = await push(stack, 5)
    assert await g.pop(stack.dispatcher, limit=10, timeout=0.01) == [j.id for j in made[:2]]  # the burst: 2
    assert await g.pop(stack.dispatcher, limit=10, timeout=0.01) == []
    ticks.now += 1
    assert await g.pop(stack.dispatcher, limit=10, timeout=0.01) == [j.id for j in made[2:4]]
    ticks.now += 10  # the bucket holds at most its burst
    assert await g.pop(stack.dispatcher, limit=10, timeout=0.01) == [made[4].id]
    assert stack.dispatcher.buckets["default"][0] == 1.0  # the token of no id stayed in the bucket


# -- a worker -------------------------------------------------------------------------------------------------


async def test_a_worker_runs_one_job_of_a_key_at_a_time_and_skips_a_paused_queue() -> None:
    stack = Stack()
    running: list[int] = []
    now_running = 0

    async def step(payload: dict[str, Any], ctx: Any) -> None:
        nonlocal now_running
        now_running += 1
        running.append(now_running)
        await asyncio.sleep(0.005)
        now_running -= 1

    stack.tasks.handlers["step"] = step
    await update_queue(stack)("slow", {"paused": True})
    keyed = [s.job.id for s in await stack.submit()([JobSpec(task="step", concurrency_key="k")] * 6, prefix=None)]
    [paused] = await stack.submit()([JobSpec(task="noop", queue="slow")], prefix=None)
    worker = stack.worker(concurrency=8, queues=("default", "slow"))
    worker.gate = gate(stack, "default", "slow")
    async with working(worker):
        for _ in range(400):
            if all(stack.jobs.rows[i].state is State.SUCCEEDED for i in keyed):
                break
            await asyncio.sleep(0.005)
        assert stack.jobs.rows[paused.job.id].state is State.QUEUED
        await update_queue(stack)("slow", {"paused": False})
        await worker.gate.refresh()
        for _ in range(400):
            if stack.jobs.rows[paused.job.id].state is State.SUCCEEDED:
                break
            await asyncio.sleep(0.005)
    assert all(stack.jobs.rows[i].state is State.SUCCEEDED for i in keyed)
    assert max(running) == 1 and len(running) == 6
    assert stack.jobs.rows[paused.job.id].state is State.SUCCEEDED
