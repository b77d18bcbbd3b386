"""A real `gnomon dev` process (API + scheduler + worker on the in-memory adapters) on a free port, for the
tests of the Python client and of the client commands."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from tests.integration.cluster import free_port
from tests.integration.processes import gnomon, gnomon_env

TOKEN = "dev-" + secrets.token_hex(8)


@contextmanager
def running_dev(queues: str = "default", **settings: object) -> Iterator[str]:
    """The base URL of a `gnomon dev` answering requests with TOKEN, its worker serving `queues`; it must exit 0
    on SIGTERM at the end."""
    port = free_port()
    env = gnomon_env(None, None, api_tokens=TOKEN, port=port, **settings)
    with gnomon("dev", "--queues", queues, "--concurrency", "64", env=env) as dev:
        dev.wait_for_log("ready:", timeout=30)
        yield f"http://127.0.0.1:{port}"
        code = dev.terminate(60)
        assert code == 0, f"gnomon dev exited {code} on SIGTERM:\n{dev.log[-4000:]}"
