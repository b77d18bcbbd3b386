"""Throwaway databases for the in-process benchmarks: one migrated template, then a fresh copy of it per
repetition, all dropped at the end (on GNOMON_BENCH_DATABASE_URL, default the machine's `postgres` database)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from adapters.postgres.migrate import migrate

BASE = os.environ.get("GNOMON_BENCH_DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")


def admin(statement: str, name: str) -> None:
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(name)))


def url_of(name: str) -> str:
    return BASE.rsplit("/", 1)[0] + "/" + name


@contextmanager
def migrated_template(prefix: str) -> Iterator[str]:
    """A freshly migrated database to copy from; its name."""
    template = f"{prefix}_{secrets.token_hex(4)}"
    admin("CREATE DATABASE {}", template)
    try:
        asyncio.run(migrate(url_of(template)))
        yield template
    finally:
        admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", template)


@contextmanager
def copy_of(template: str) -> Iterator[str]:
    """A new database made from `template`; its URL."""
    name = f"{template.rsplit('_', 1)[0]}_{secrets.token_hex(4)}"
    admin(f"CREATE DATABASE {{}} TEMPLATE {template}", name)
    try:
        yield url_of(name)
    finally:
        admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
