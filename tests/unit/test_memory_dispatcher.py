"""The in-memory Dispatcher against the shared contract, plus what only it exposes (its visible state)."""

from __future__ import annotations

import pytest

from adapters.memory.dispatcher import InMemoryDispatcher
from application.ports import Dispatcher
from tests.contracts.dispatcher import PACE_SECONDS, DispatcherContract, job


@pytest.fixture
def dispatcher() -> Dispatcher:
    return InMemoryDispatcher(pace=PACE_SECONDS)


class TestInMemoryDispatcher(DispatcherContract):
    pass


async def test_state_is_visible_per_queue_and_priority() -> None:
    fake = InMemoryDispatcher()

    await fake.push([job("a", queue="q", priority=7), job("b", queue="q", priority=7), job("c", priority=0)])

    assert {q: fake.waiting(q) for q in fake.sets} == {"q": {7: ["a", "b"]}, "default": {0: ["c"]}}


class Ticks:
    """A clock that only moves when told: the order of pushes at chosen instants, with no timing at all."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_kth_id_of_a_push_goes_as_if_pushed_k_paces_later() -> None:
    ticks = Ticks()
    fake = InMemoryDispatcher(pace=0.001, clock=ticks)
    await fake.push([job(f"burst-{k}") for k in range(10)])  # scored 100.000 .. 100.009

    for at, job_id in [(100.0025, "due-a"), (100.0025, "due-b"), (100.050, "due-c")]:
        ticks.now = at
        await fake.push([job(job_id)])

    assert fake.waiting("default") == {0: [
        "burst-0", "burst-1", "burst-2", "due-a", "due-b", "burst-3", "burst-4", "burst-5", "burst-6", "burst-7",
        "burst-8", "burst-9", "due-c"]}


async def test_a_repush_keeps_the_first_score_even_later() -> None:
    ticks = Ticks()
    fake = InMemoryDispatcher(pace=0.001, clock=ticks)
    await fake.push([job("a"), job("b")])
    ticks.now += 60

    await fake.push([job("c"), job("a")])

    assert fake.waiting("default") == {0: ["a", "b", "c"]}


async def test_a_priority_out_of_range_is_clamped_rather_than_stranded() -> None:
    fake = InMemoryDispatcher()

    await fake.push([job("low", priority=-3), job("high", priority=42), job("mid", priority=5)])

    assert await fake.pop(["default"], limit=10, timeout=0) == ["high", "mid", "low"]
