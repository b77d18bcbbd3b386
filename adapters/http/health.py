"""Liveness and readiness probes: open, outside /v1."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency

Readiness = Callable[[], Awaitable[dict[str, bool]]]
log = logging.getLogger("gnomon.http")


class Health(msgspec.Struct):
    status: str
    checks: dict[str, bool] = msgspec.field(default_factory=dict)


@get("/healthz", tags=["health"], security=[{}])
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@get("/readyz", tags=["health"], security=[{}])
async def readyz(readiness: NamedDependency[Readiness]) -> Response[Health]:
    """200 when every backing service answers, else 503 with what failed."""
    try:
        checks = await readiness()
    except Exception:  # a probe must answer, whatever the check did
        log.exception("readiness check raised")
        checks = {"readiness": False}
    ready = all(checks.values())
    return Response(Health(status="ready" if ready else "unavailable", checks=checks),
                    status_code=200 if ready else 503)
