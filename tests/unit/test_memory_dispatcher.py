"""The in-memory Dispatcher against the shared contract, plus what only it exposes (its visible state)."""

from __future__ import annotations

import pytest

from adapters.memory.dispatcher import InMemoryDispatcher
from application.ports import Dispatcher
from tests.contracts.dispatcher import DispatcherContract, job


@pytest.fixture
def dispatcher() -> Dispatcher:
    return InMemoryDispatcher()


class TestInMemoryDispatcher(DispatcherContract):
    pass


async def test_state_is_visible_per_queue_and_priority() -> None:
    fake = InMemoryDispatcher()

    await fake.push([job("a", queue="q", priority=7), job("b", queue="q", priority=7), job("c", priority=0)])

    assert {q: {p: list(ids) for p, ids in lists.items()} for q, lists in fake.lists.items()} == {
        "q": {7: ["a", "b"]}, "default": {0: ["c"]}}


async def test_a_priority_out_of_range_is_clamped_rather_than_stranded() -> None:
    fake = InMemoryDispatcher()

    await fake.push([job("low", priority=-3), job("high", priority=42), job("mid", priority=5)])

    assert await fake.pop(["default"], limit=10, timeout=0) == ["high", "mid", "low"]
