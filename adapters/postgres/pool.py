"""The connection pool, and the one place where losing the database becomes `Unavailable`.

Entrypoints create the pool (closed), `await open_pool(pool)` in their lifespan and `await pool.close()` at
the end; repositories borrow connections through `connection(pool)`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_loads
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from adapters.postgres import sql
from domain.errors import Unavailable

Pool = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]
RECONNECT_FIRST: Final = 0.1  # seconds before the pool's first new try after a failed connection
RECONNECT_MOST: Final = 1.0  # and the longest wait between two tries


class Reconnecting(AttemptWithBackoff):
    """psycopg_pool's retry schedule for a connection it failed to open, made quick and capped: 0.1, 0.2, 0.4,
    0.8, then every second. The library's own doubles from 1 s without a cap (1, 3, 7, 15 s after the first
    failure), so after a PostgreSQL restart a process could wait 7 s for a connection while the server was back
    in one - longer than a short lease, so a live worker's jobs were rescued as lost."""

    INITIAL_DELAY = RECONNECT_FIRST

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_MOST)


class GnomonPool(AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]):
    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        # psycopg_pool's hook for opening a connection (pool_async.py): the same, with our retry schedule
        await super()._add_connection(attempt or Reconnecting(timeout=self.reconnect_timeout), growing)

# A connection whose peer vanished without a FIN (a host or network lost) would otherwise wait on its socket
# for the kernel's two hours: TCP keepalives find it dead within ~25 s, and the statement then fails as
# Unavailable like any other outage. Defaults only: the same libpq parameters in the URL win.
KEEPALIVES: Final = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def connection_defaults(conninfo: str, name: str) -> dict[str, Any]:
    """libpq parameters gnomon sets unless the URL sets them: keepalives, an application_name that shows
    which gnomon pool a backend serves in pg_stat_activity, and a session time zone of UTC, so the driver hands
    back timestamps already in UTC (in another zone it builds them in that zone and every `astimezone(UTC)` of a
    row converts them: ~6 per claimed row)."""
    given = psycopg.conninfo.conninfo_to_dict(conninfo)
    wanted: dict[str, Any] = {**KEEPALIVES, "application_name": name, "options": "-c TimeZone=UTC"}
    return {key: value for key, value in wanted.items() if key not in given}


def create_pool(conninfo: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0,
                name: str = "gnomon", generic_plans: bool = False) -> Pool:
    """A closed pool of autocommit connections returning dict rows (open it with `open_pool`).

    generic_plans: plan each prepared statement once (plan_cache_mode = force_generic_plan) instead of again
    at every execution. For the scheduler, whose few statements run many times a second and are written to
    have one good plan whatever their parameters: PostgreSQL's default keeps re-planning them (their generic
    plan's estimate looks worse than a custom one), and planning against statistics of a large table costs
    more than executing a tick that finds nothing due."""
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row, **connection_defaults(conninfo, name)}
    # No check on borrow (a round trip each time, ~9% of a worker's CPU): a connection that died while idle
    # fails its first statement instead, `connection()` turns that into Unavailable and sweeps the pool.
    return GnomonPool(conninfo, kwargs=kwargs, min_size=min_size, max_size=max_size, open=False,
                      timeout=timeout, name=name, configure=_generic_plans if generic_plans else _configure)


async def _configure(conn: psycopg.AsyncConnection[DictRow]) -> None:
    """Rows as the repositories want them, cheaply: uuids as the text they are in the domain (building a
    uuid.UUID and printing it again cost more than the rest of a row's columns), JSON decoded by msgspec."""
    conn.adapters.register_loader("uuid", TextLoader)
    set_json_loads(_json_loads, conn)


def _json_loads(data: bytes) -> Any:
    """JSON from the database: msgspec decodes a claimed row's payload and backoff ~8x faster than json.loads
    (~4 us of a worker's ~100 per job). It refuses a number with a fraction beyond a float's range (1e400 + 0.5,
    which jsonb prints in full and json.loads reads as inf); such a value falls back to json.loads, so every stored
    value reads as it did."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return json.loads(data)


async def _generic_plans(conn: psycopg.AsyncConnection[DictRow]) -> None:
    await _configure(conn)
    await conn.execute(sql.GENERIC_PLANS)


async def open_pool(pool: Pool, *, timeout: float = 30.0) -> None:
    """Open the pool and wait for its first connections; Unavailable if PostgreSQL cannot be reached."""
    try:
        await pool.open(wait=True, timeout=timeout)
    except PoolTimeout as exc:
        await pool.close()
        raise Unavailable(f"PostgreSQL unreachable: {exc}") from exc


@asynccontextmanager
async def connection(pool: Pool) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
    """A pooled connection; connection-level failures surface as Unavailable.

    After such a failure the idle connections are checked and the dead ones replaced, so that once the server
    is back (a restart kills every pooled connection at once) the next call works instead of drawing the
    next dead connection."""
    try:
        async with pool.connection() as conn:
            yield conn
    except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction, PoolTimeout) as exc:
        # ReadOnlySqlTransaction: the server became a replica (a failover); like an outage, it passes
        await _sweep(pool)
        raise Unavailable(f"PostgreSQL unavailable: {exc}") from exc


async def _sweep(pool: Pool) -> None:
    with contextlib.suppress(Exception):  # best effort: the Unavailable being raised is what matters
        await pool.check()


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
    """A pooled connection inside one transaction (committed on exit, rolled back on error)."""
    async with connection(pool) as conn, conn.transaction():
        yield conn
