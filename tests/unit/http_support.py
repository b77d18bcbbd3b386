"""The HTTP app on the memory adapters, for the API tests: a client, the container, the clock and the stores.

Not a conftest: test modules build their own fixture from `running_api`, so nothing here is shared by accident.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

from attrs import Factory, define, frozen
from dependency_injector import providers
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.http.app import create_app
from adapters.http.health import Readiness
from adapters.memory.clock import FrozenClock
from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.schedules import InMemoryScheduleRepository
from entrypoints.container import MemoryAdapters, UseCases

TOKEN: Final = "s3cret-token"
AUTH: Final = {"Authorization": f"Bearer {TOKEN}"}
T0: Final = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TASKS: Final = frozenset({"noop", "sleep", "fail", "http"})
PROBLEM: Final = "application/problem+json"
RFC3339_Z: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@frozen
class KnownTasks:
    """A registry that knows the built-in names; the API only checks names, it never runs a handler."""

    known: frozenset[str] = TASKS

    def names(self) -> frozenset[str] | None:
        return self.known

    def handler(self, name: str) -> None:
        return None


@define
class Api:
    client: AsyncTestClient[Any]
    container: UseCases
    clock: FrozenClock
    jobs: InMemoryJobRepository
    schedules: InMemoryScheduleRepository
    ids: dict[str, str] = Factory(dict)  # names a test gives to what it created

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], int]:
        """Every stored job and schedule with its version, and the ledger size: equal before and after = nothing
        was stored or changed."""
        return ({j.id: j.version for j in self.jobs.rows.values()},
                {s.id: s.version for s in self.schedules.rows.values()},
                sum(len(entries) for entries in self.schedules.ledger.values()))


def build_app(*, readiness: Readiness | None = None, max_body_bytes: int | None = None,
              adapters: MemoryAdapters | None = None) -> tuple[Litestar, MemoryAdapters, UseCases, FrozenClock]:
    adapters = adapters or MemoryAdapters(tasks=providers.Object(KnownTasks()))
    container = UseCases(adapters=adapters)
    clock = FrozenClock(T0)
    container.clock.override(providers.Object(clock))
    options: dict[str, Any] = {} if max_body_bytes is None else {"max_body_bytes": max_body_bytes}
    app = create_app(container, tokens=["another-token", TOKEN], readiness=readiness, **options)
    return app, adapters, container, clock


@asynccontextmanager
async def running_api(*, readiness: Readiness | None = None, max_body_bytes: int | None = None,
                      adapters: MemoryAdapters | None = None) -> AsyncIterator[Api]:
    app, adapters, container, clock = build_app(readiness=readiness, max_body_bytes=max_body_bytes,
                                                adapters=adapters)
    async with AsyncTestClient(app) as client:
        client.headers.update(AUTH)
        yield Api(client=client, container=container, clock=clock, jobs=adapters.jobs(),
                  schedules=adapters.schedules())


def job_body(**fields: Any) -> dict[str, Any]:
    return {"task": "noop", "payload": {"n": 1}} | fields


def schedule_body(**fields: Any) -> dict[str, Any]:
    return {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris", "job": {"task": "noop"}} | fields


async def submit(api: Api, **fields: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/jobs", json=job_body(**fields))
    assert response.status_code == 201, response.text
    return response.json()


async def create_schedule(api: Api, **fields: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/schedules", json=schedule_body(**fields))
    assert response.status_code == 201, response.text
    return response.json()
