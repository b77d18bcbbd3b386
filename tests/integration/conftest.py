"""Shared fixtures of the integration tests: real PostgreSQL, one throwaway database per test.

A session-scoped template database is built from `migrations/` with the real runner; each test gets a
clone of it (`CREATE DATABASE ... TEMPLATE`), dropped afterwards. A missing server is an error, never a skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import pytest_asyncio
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo
from redis.asyncio import Redis

from adapters.postgres.migrate import migrate
from adapters.postgres.pool import Pool, create_pool, open_pool
from tests.integration.cluster import Cluster
from tests.integration.stack import new_prefix, run_prefix

DEFAULT_URL = "postgresql://root@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # DBs 8-15 belong to the benchmark harness


def base_url() -> str:
    return os.environ.get("GNOMON_TEST_DATABASE_URL", DEFAULT_URL)


def database_url(name: str) -> str:
    """The base URL pointed at another database (URL or key=value conninfo alike)."""
    base = base_url()
    if "://" in base:
        parts = urlsplit(base)
        return urlunsplit(parts._replace(path="/" + name))
    return make_conninfo(base, dbname=name)


def create_database(name: str, template: str | None = None) -> str:
    with psycopg.connect(base_url(), autocommit=True) as conn:
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                         sql.Identifier(template)))
    return database_url(name)


def drop_database(name: str) -> None:
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def throwaway_name(kind: str) -> str:
    return f"gnomon_{kind}_{secrets.token_hex(6)}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_template() -> AsyncIterator[str]:
    """Name of a database migrated from `migrations/` by the real runner; clones start from it."""
    name = throwaway_name("tmpl")
    url = create_database(name)
    try:
        await migrate(url)
        yield name
    finally:
        drop_database(name)


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """URL of a fresh, fully migrated database of this test alone."""
    name = throwaway_name("test")
    url = create_database(name, template=pg_template)
    try:
        yield url
    finally:
        drop_database(name)


OpenPool = Callable[..., Awaitable[Pool]]


@pytest.fixture
async def open_pools(pg_url: str) -> AsyncIterator[OpenPool]:
    """Opens pools on the test database (`max_size` connections each, 2 unless told), one per simulated process;
    all closed at the end."""
    pools: list[Pool] = []

    async def open_one(max_size: int = 2) -> Pool:
        pool = create_pool(pg_url, max_size=max_size)
        await open_pool(pool)
        pools.append(pool)
        return pool

    yield open_one
    for pool in pools:
        await pool.close()


@pytest.fixture
async def pool(open_pools: OpenPool) -> Pool:
    """A pool of 2 connections on the test database."""
    return await open_pools()


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """URL of an empty, unmigrated database of this test alone (for migration tests)."""
    name = throwaway_name("empty")
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="session", autouse=True)
def sweep_redis_keys() -> Iterator[None]:
    """At the end of the session, delete every key this pytest process left in the test Redis database (queues
    that a test's stack never drained, scripts' keys...): the database is shared, so only keys under this
    process's own prefixes (`run_prefix()`), never another run's."""
    yield
    client = redis.Redis.from_url(os.environ.get("GNOMON_TEST_REDIS_URL", DEFAULT_REDIS_URL))
    try:
        keys = list(client.scan_iter(match=f"*{run_prefix()}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    """URL of the test Redis (DB 0-7 only); tests isolate themselves with a random key prefix."""
    return os.environ.get("GNOMON_TEST_REDIS_URL", DEFAULT_REDIS_URL)


@pytest_asyncio.fixture
async def throwaway_cluster() -> AsyncIterator[Cluster]:
    """A PostgreSQL cluster of this test alone (tests/integration/cluster.py), running, with a migrated
    database `gnomon` at `cluster.url("gnomon")`. The test may stop, crash and restart it; it is destroyed
    afterwards."""
    cluster = Cluster.create()
    try:
        cluster.start()
        await migrate(cluster.create_database("gnomon"))
        yield cluster
    finally:
        cluster.destroy()


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the test Redis answering str (a Redis that cannot be reached fails the test)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    await client.ping()
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A GNOMON_REDIS_PREFIX of this test alone; its keys are deleted afterwards."""
    name = new_prefix()
    yield name
    keys = [key async for key in redis_client.scan_iter(match=f"*{name}*", count=1000)]  # hash-tagged or not
    if keys:
        await redis_client.delete(*keys)
