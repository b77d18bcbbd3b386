"""The API as an ASGI app factory, for `gnomon api --workers N`: uvicorn imports it by name in each of its
worker processes. Any ASGI server can use it too: `uvicorn --factory entrypoints.asgi:create`.

A worker process has no command line of ours, so everything comes from the environment (the `gnomon api`
parent exports its flags there first: settings.export_flags). Each process builds its own runtime, and the
app's lifespan opens it on startup and closes it on shutdown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from entrypoints.container import Runtime, build
from entrypoints.logs import setup_logging
from entrypoints.settings import Settings, SettingsError

if TYPE_CHECKING:
    from litestar import Litestar
    from prometheus_client import CollectorRegistry

log = logging.getLogger("gnomon")


def create() -> Litestar:
    """The API app of this process, on the adapters the environment (or gnomon.toml) chooses; /metrics shows
    this process's own figures."""
    return _create(shared_metrics=False)


def create_shared() -> Litestar:
    """The same app for one process among several that share prometheus-client's multiprocess directory
    (PROMETHEUS_MULTIPROC_DIR, empty and set in the environment before they start, as `gnomon api --workers N`
    does): /metrics shows the sum over all of them, whichever answers."""
    return _create(shared_metrics=True)


def _create(*, shared_metrics: bool) -> Litestar:
    from adapters.http.app import create_app
    from adapters.metrics.prometheus import MultiprocessRegistry

    settings = Settings.from_env()
    setup_logging("api", settings.log_format)
    if not settings.api_tokens:
        raise SettingsError("GNOMON_API_TOKENS must be set for the API (comma-separated bearer tokens)")
    runtime = build(settings)
    # Shared: the use cases' metrics still register in the runtime's registry, but their values live in the
    # directory's files, which the served registry reads for every process.
    served: CollectorRegistry = MultiprocessRegistry() if shared_metrics else runtime.registry
    app = create_app(runtime.use_cases, tokens=settings.api_tokens, readiness=runtime.readiness,
                     max_body_bytes=settings.max_body_bytes, registry=served)
    app.on_startup.append(_starter(runtime))
    app.on_shutdown.append(runtime.stop)
    return app


def _starter(runtime: Runtime) -> Callable[[], Awaitable[None]]:
    async def start() -> None:
        await runtime.start()
        log.info("ready: api (process %d)", os.getpid())

    return start
