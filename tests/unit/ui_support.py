"""The dashboard on the memory adapters, for the /ui tests: a logged-in client and ways to make jobs reach any
state at chosen instants (the worker is not running here: the tests move jobs through the domain)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Final

from litestar.testing import AsyncTestClient

from application.identity import new_id
from domain.job import Job, JobSpec
from tests.unit.http_support import TOKEN, Api, running_api

CSRF: Final = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def log_in(client: AsyncTestClient[Any], token: str = TOKEN, target: str = "/ui") -> str:
    """Log in through the form; the session's CSRF token (as the next page's forms carry it)."""
    form = await client.get("/ui/login")
    response = await client.post("/ui/login", data={"token": token, "csrf": csrf_of(form.text), "next": target},
                                 follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of((await client.get("/ui")).text)


@asynccontextmanager
async def running_ui() -> AsyncIterator[tuple[Api, str]]:
    """The app with a logged-in client, and the session's CSRF token."""
    async with running_api() as api:
        yield api, await log_in(api.client)


def add(api: Api, *, at: datetime | None = None, **spec: Any) -> Job:
    now = at or api.clock.now()
    job = Job.create(new_id(now), JobSpec(**{"task": "noop"} | spec), now=now)
    api.jobs.add_now([job])
    return job


def running(api: Api, *, at: datetime | None = None, worker: str = "host:1:ab", **spec: Any) -> Job:
    job = add(api, at=at, **spec)
    started = job.start(worker_id=worker, now=at or api.clock.now(), lease_seconds=30)
    api.jobs.save_now(started)
    return started


def finished(api: Api, *, ok: bool = True, at: datetime | None = None, took: float = 0.0, **spec: Any) -> Job:
    """A job that ran once and succeeded (result {"ok": true}) or failed for good ("boom"), ending at `at`."""
    now = at or api.clock.now()
    job = running(api, at=now - timedelta(seconds=took), **({"max_attempts": 1} | spec))
    done, run = (job.succeed(token=job.version, now=now, result={"ok": True}) if ok
                 else job.fail(token=job.version, now=now, error="boom"))
    api.jobs.save_now(done, run)
    return done
