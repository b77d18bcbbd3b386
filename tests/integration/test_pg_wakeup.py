"""PgWakeup on a real PostgreSQL: a NOTIFY from anyone ends a LISTEN wait, and the listener survives losing
its connection. Waits that should end early are given 600 s and guarded by a generous wait_for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from adapters.postgres.pool import Pool
from adapters.postgres.wakeup import PgWakeup

LONG = 600.0
GUARD = 60.0  # far beyond any healthy delivery; reaching it means the wake-up was lost


@pytest.fixture
async def waiter(pool: Pool, pg_url: str) -> AsyncIterator[PgWakeup]:
    wakeup = PgWakeup(pool, pg_url)
    await wakeup.wait(0)  # connects and starts listening (a first wait returns at once)
    yield wakeup
    await wakeup.close()


@pytest.fixture
def sender(pool: Pool, pg_url: str) -> PgWakeup:
    return PgWakeup(pool, pg_url)


async def test_a_notify_ends_a_long_wait(waiter: PgWakeup, sender: PgWakeup) -> None:
    waiting = asyncio.create_task(waiter.wait(LONG))
    await asyncio.sleep(0.1)  # let the wait start; the test holds either way
    await sender.notify()
    await asyncio.wait_for(waiting, GUARD)


async def test_a_notify_sent_while_nobody_waits_ends_the_next_wait(waiter: PgWakeup, sender: PgWakeup) -> None:
    await sender.notify()
    await asyncio.wait_for(waiter.wait(LONG), GUARD)


async def test_without_a_notify_the_wait_just_times_out(waiter: PgWakeup) -> None:
    await waiter.wait(0.2)
    await waiter.wait(0)


async def test_the_listener_comes_back_after_its_connection_is_killed(
        waiter: PgWakeup, sender: PgWakeup, pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        await admin.execute("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                               WHERE datname = current_database() AND pid <> pg_backend_pid()
                                 AND query = 'LISTEN gnomon_wakeup'""")
    await asyncio.wait_for(waiter.wait(0.5), GUARD)  # notices the loss, sleeps instead of raising
    assert "wake-up listener failed" in caplog.text
    await asyncio.wait_for(waiter.wait(LONG), GUARD)  # reconnects: returns at once
    waiting = asyncio.create_task(waiter.wait(LONG))
    await asyncio.sleep(0.1)
    await sender.notify()
    await asyncio.wait_for(waiting, GUARD)


async def test_a_cancelled_wait_leaves_the_listener_usable(waiter: PgWakeup, sender: PgWakeup) -> None:
    waiting = asyncio.create_task(waiter.wait(LONG))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await sender.notify()
    await asyncio.wait_for(waiter.wait(LONG), GUARD)


async def test_an_unreachable_database_makes_waits_sleep_not_fail(pool: Pool) -> None:
    wakeup = PgWakeup(pool, "postgresql://root@127.0.0.1:1/none?connect_timeout=2")
    await wakeup.wait(0.2)
    await wakeup.close()
