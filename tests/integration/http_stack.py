"""The user's view of a real gnomon stack: a `gnomon stack` (or single `gnomon` processes) on a database and a
Redis key prefix of the test's own, and an HTTP client that knows nothing but the API and its token.

Every wait is bounded: a test that waits for an end state gets an AssertionError that says where things stood
instead of hanging.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import redis

from tests.integration.cluster import free_port
from tests.integration.conftest import DEFAULT_REDIS_URL, create_database, drop_database, throwaway_name
from tests.integration.processes import GnomonProcess, gnomon, gnomon_env
from tests.integration.stack import new_prefix

TOKEN = "e2e-" + secrets.token_hex(8)
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def eventually(probe: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 20.0,
               every: float = 0.1) -> Any:
    """Call `probe` until `done(value)`; AssertionError with the last value after `timeout` s."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} within {timeout:g} s; last seen: {value!r}")
        time.sleep(every)


class Api:
    """httpx on the API of a stack, with the bearer token; `check` asserts the status and returns the JSON."""

    def __init__(self, base_url: str, token: str = TOKEN) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.anonymous = httpx.Client(base_url=base_url, timeout=30)

    def close(self) -> None:
        self.http.close()
        self.anonymous.close()

    def check(self, response: httpx.Response, status: int) -> Any:
        assert response.status_code == status, f"{response.request.method} {response.request.url}: " \
                                               f"{response.status_code} {response.text[:2000]}"
        return response.json() if response.content else None

    def get(self, path: str, status: int = 200, **params: Any) -> Any:
        return self.check(self.http.get(path, params=params), status)

    def post(self, path: str, body: Any = None, status: int = 200) -> Any:
        return self.check(self.http.post(path, json=body), status)

    def submit(self, status: int = 201, **job: Any) -> dict[str, Any]:
        return self.post("/v1/jobs", job, status)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/v1/jobs/{job_id}")

    def runs(self, job_id: str) -> list[dict[str, Any]]:
        return self.get(f"/v1/jobs/{job_id}/runs")

    def until(self, job_id: str, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        return eventually(lambda: self.job(job_id), lambda job: job["state"] in states,
                          f"job {job_id} never reached {', '.join(states)}", timeout)

    def all_jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """Every job matching the filters, following the cursors (pages of 1000)."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = filters | {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            page = self.get("/v1/jobs", **params)
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    def ready(self) -> bool:
        try:
            return self.anonymous.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False


def redis_base_url() -> str:
    """The Redis of the integration tests (as the `redis_url` fixture, for fixtures wider than a test)."""
    return os.environ.get("GNOMON_TEST_REDIS_URL", DEFAULT_REDIS_URL)


@contextmanager
def own_database() -> Iterator[str]:
    """An empty database of the caller alone (gnomon migrates it), dropped afterwards."""
    name = throwaway_name("e2e")
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Remove the keys a test's stack left under its prefix (the Redis database is shared)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))  # `{prefix:q:...}` hash-tagged keys too
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def running_stack(database_url: str, redis_url: str, *args: str,
                  **settings: object) -> Iterator[tuple[GnomonProcess, Api]]:
    """`gnomon stack <args>` on the test's database and a fresh Redis prefix; ready when it says so and /readyz
    answers. At the end it gets SIGTERM and must exit 0 after its children drained."""
    prefix = new_prefix()
    port = free_port()
    env = gnomon_env(database_url, redis_url, prefix=prefix, api_tokens=TOKEN, port=port, **settings)
    api = Api(f"http://127.0.0.1:{port}")
    try:
        with gnomon("stack", *args, env=env) as stack:
            stack.wait_for_log("stack ready", timeout=60)
            eventually(api.ready, bool, "the API never answered /readyz", timeout=30)
            yield stack, api
            code = stack.terminate(60)
            assert code == 0, f"gnomon stack exited {code} on SIGTERM:\n{stack.log[-4000:]}"
    finally:
        api.close()
        delete_prefix(redis_url, prefix)
