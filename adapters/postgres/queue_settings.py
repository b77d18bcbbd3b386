"""QueueSettingsRepository on PostgreSQL: one small table, read by every worker once a second."""

from __future__ import annotations

from datetime import UTC

from attrs import define

from adapters.postgres import flow_sql
from adapters.postgres.pool import Pool, connection
from adapters.postgres.rows import Row
from domain.flow import QueueSettings


@define
class PgQueueSettingsRepository:
    _pool: Pool

    async def all(self) -> list[QueueSettings]:
        async with connection(self._pool) as conn:
            rows = await (await conn.execute(flow_sql.ALL_QUEUE_SETTINGS)).fetchall()
        return [_settings(row) for row in rows]

    async def get(self, queue: str) -> QueueSettings:
        async with connection(self._pool) as conn:
            row = await (await conn.execute(flow_sql.QUEUE_SETTINGS, {"queue": queue})).fetchone()
        return QueueSettings(queue=queue) if row is None else _settings(row)

    async def upsert(self, settings: QueueSettings) -> None:
        params = {"queue": settings.queue, "max_running": settings.max_running,
                  "max_per_second": settings.max_per_second, "paused": settings.paused,
                  "updated_at": settings.updated_at}
        async with connection(self._pool) as conn:
            await conn.execute(flow_sql.UPSERT_QUEUE_SETTINGS, params)


def _settings(row: Row) -> QueueSettings:
    return QueueSettings(queue=row["queue"], max_running=row["max_running"], max_per_second=row["max_per_second"],
                         paused=row["paused"], updated_at=row["updated_at"].astimezone(UTC))
