"""The Wakeup port on LISTEN/NOTIFY (channel `gnomon_wakeup`): a submitter anywhere wakes every scheduler.

Waiting uses a dedicated connection, not a pooled one: LISTEN belongs to a session. When that connection
breaks the waiter falls back to sleeping and reconnects on its next wait; since notifications sent while
nobody listened are lost, a wait that had to (re)connect returns at once, as if notified. A spurious wake-up
only costs the scheduler one early tick; a missed one could make it oversleep.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing

import psycopg
from attrs import define, field

from adapters.postgres import sql
from adapters.postgres.pool import Pool, connection

log = logging.getLogger("gnomon.postgres")


@define
class PgWakeup:
    _pool: Pool
    _conninfo: str
    _listener: psycopg.AsyncConnection[tuple[object, ...]] | None = field(default=None, init=False, repr=False)

    async def notify(self) -> None:
        async with connection(self._pool) as conn:
            await conn.execute(sql.NOTIFY_WAKEUP)

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        try:
            listener = self._listener
            if listener is None or listener.closed:
                await self._listen(max(timeout, 1.0))
                return  # anything sent while nobody listened is lost: count it as a wake-up
            async with aclosing(listener.notifies(timeout=max(timeout, 0.0), stop_after=1)) as received:
                async for _ in received:
                    pass
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("wake-up listener failed, sleeping instead: %s", exc)
            await self.close()
            await asyncio.sleep(max(deadline - loop.time(), 0.0))

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.closed:
            await listener.close()

    async def _listen(self, connect_timeout: float) -> None:
        connecting = psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        conn = await asyncio.wait_for(connecting, connect_timeout)
        try:
            await conn.execute(sql.LISTEN_WAKEUP)
        except BaseException:
            await conn.close()
            raise
        self._listener = conn
