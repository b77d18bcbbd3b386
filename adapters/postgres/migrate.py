"""Flyway-style migrations: `V<digits>__<description>.sql` files applied in version order, checksummed.

Each file runs in its own transaction together with its row in `gnomon_schema_history`, so a failing file
leaves no trace. A session advisory lock held for the whole run makes concurrent runs safe: the later ones
wait, then find nothing left to do. Editing or deleting a file that was applied is refused.
"""

from __future__ import annotations

import hashlib
import re
import time
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import psycopg
from attrs import frozen
from psycopg.rows import dict_row

from domain.errors import Unavailable

FILE_NAME: Final = re.compile(r"^V(?P<version>\d+)__(?P<description>[^/]+)\.sql$")
LOCK_KEY: Final = 0x676E6F6D6F6E  # "gnomon": one fixed key for every migration run

CREATE_HISTORY: Final = """
CREATE TABLE IF NOT EXISTS gnomon_schema_history (
    version     text        PRIMARY KEY,
    description text        NOT NULL,
    script      text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL,
    success     boolean     NOT NULL
)"""
LOCK: Final = "SELECT pg_advisory_lock(%(key)s)"
UNLOCK: Final = "SELECT pg_advisory_unlock(%(key)s)"
APPLIED: Final = "SELECT version, description, script, checksum, success FROM gnomon_schema_history"
RECORD: Final = """
INSERT INTO gnomon_schema_history (version, description, script, checksum, duration_ms, success)
VALUES (%(version)s, %(description)s, %(script)s, %(checksum)s, %(duration_ms)s, true)"""


class MigrationError(Exception):
    """The migrations on disk and the history in the database disagree, or a migration failed."""


@frozen
class Migration:
    version: str
    description: str
    script: str
    sql: bytes

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql).hexdigest()


def discover(directory: Path | Traversable | None = None) -> list[Migration]:
    """The migration files of `directory` (default: the `migrations` package), in version order."""
    folder = directory if directory is not None else files("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: not a migration name (expected V<digits>__<description>.sql)")
        migration = Migration(match["version"], match["description"].replace("_", " "), entry.name,
                              entry.read_bytes())
        if (other := found.get(migration.number)) is not None:
            raise MigrationError(f"{entry.name} and {other.script} have the same version {migration.number}")
        found[migration.number] = migration
    return [found[number] for number in sorted(found)]


async def migrate(conninfo: str, *, directory: Path | Traversable | None = None) -> list[str]:
    """Apply the pending migrations; return the versions applied (empty when up to date)."""
    migrations = discover(directory)
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        raise Unavailable(f"cannot reach PostgreSQL to migrate: {exc}") from exc
    async with conn:
        await conn.execute(LOCK, {"key": LOCK_KEY})
        try:
            await conn.execute(CREATE_HISTORY)
            history = await (await conn.execute(APPLIED)).fetchall()
            pending = _pending(migrations, history)
            for migration in pending:
                await _apply(conn, migration)
            return [m.version for m in pending]
        finally:
            if not conn.closed:
                await conn.execute(UNLOCK, {"key": LOCK_KEY})


def _pending(migrations: list[Migration], history: list[dict[str, Any]]) -> list[Migration]:
    """The migrations not applied yet, after checking that the applied ones are untouched."""
    on_disk = {m.number: m for m in migrations}
    applied: set[int] = set()
    for row in sorted(history, key=lambda r: int(r["version"])):
        number = int(row["version"])
        applied.add(number)
        migration = on_disk.get(number)
        if not row["success"]:
            raise MigrationError(f"{row['script']} is recorded as failed; repair the schema history first")
        if migration is None:
            raise MigrationError(f"{row['script']} was applied (version {row['version']}) but its file is missing")
        if migration.checksum != row["checksum"]:
            raise MigrationError(f"{migration.script} was changed after it was applied (checksum mismatch); "
                                 "add a new migration instead of editing an applied one")
    pending = [m for m in migrations if m.number not in applied]
    latest = max(applied, default=-1)
    if late := [m.script for m in pending if m.number < latest]:
        raise MigrationError(f"{', '.join(late)}: older than the latest applied version {latest}; "
                             "migrations must be added in version order")
    return pending


async def _apply(conn: psycopg.AsyncConnection[Any], migration: Migration) -> None:
    started = time.monotonic()
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            duration_ms = round((time.monotonic() - started) * 1000)
            await conn.execute(RECORD, {"version": migration.version, "description": migration.description,
                                        "script": migration.script, "checksum": migration.checksum,
                                        "duration_ms": duration_ms})
    except psycopg.OperationalError as exc:
        raise Unavailable(f"{migration.script}: connection to PostgreSQL failed: {exc}") from exc
    except psycopg.Error as exc:
        raise MigrationError(f"{migration.script} failed and was rolled back: {exc}") from exc
