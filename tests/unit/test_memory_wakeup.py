"""InMemoryWakeup: a notify wakes a waiting scheduler, and one sent before the wait is not lost."""

from __future__ import annotations

import asyncio

from adapters.memory.wakeup import InMemoryWakeup
from application.ports import Wakeup

GUARD_SECONDS = 10.0  # turns a missed wake-up into a failure instead of a hang


async def test_a_notify_wakes_a_waiting_task() -> None:
    wakeup: Wakeup = InMemoryWakeup()
    waiting = asyncio.create_task(wakeup.wait(3600))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    await wakeup.notify()

    await asyncio.wait_for(waiting, GUARD_SECONDS)


async def test_a_notify_before_the_wait_is_kept_then_consumed() -> None:
    wakeup = InMemoryWakeup()

    await wakeup.notify()
    await wakeup.notify()
    assert wakeup.pending

    await asyncio.wait_for(wakeup.wait(3600), GUARD_SECONDS)

    assert not wakeup.pending


async def test_without_notify_the_wait_lasts_its_timeout() -> None:
    wakeup = InMemoryWakeup()
    loop = asyncio.get_running_loop()
    started = loop.time()

    await wakeup.wait(0.1)

    assert loop.time() - started >= 0.09  # a lower bound only: slowness never shortens it
    assert not wakeup.pending


async def test_a_zero_timeout_returns_at_once_and_consumes_a_pending_notify() -> None:
    wakeup = InMemoryWakeup()
    await wakeup.notify()

    await asyncio.wait_for(wakeup.wait(0), GUARD_SECONDS)

    assert not wakeup.pending
