"""Built-in tasks (SPEC §5): `noop`, `sleep`, `fail` (for tests and demos) and `http` (a webhook)."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Final

from adapters.tasks.webhook import make_http_task
from application.ports import Handler, TaskContext
from domain.errors import PermanentFailure

CANCEL_POLL_SECONDS: Final = 0.05


async def noop(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Does nothing, successfully (async: no thread hand-off for nothing)."""
    return None


async def sleep(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sleeps payload["seconds"] (default 1), stopping early once the job is cancelled."""
    seconds = payload.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < math.inf:
        raise PermanentFailure(f"sleep task: seconds must be a number >= 0, got {seconds!r}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not ctx.cancelled:
        remaining = start + seconds - loop.time()
        if remaining <= 0:
            return {"slept": seconds}
        await asyncio.sleep(min(CANCEL_POLL_SECONDS, remaining))
    return {"slept": round(loop.time() - start, 3), "cancelled": True}


def fail(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Raises RuntimeError(payload["message"]), or PermanentFailure when payload["permanent"] is true."""
    message = str(payload.get("message", "the fail task failed, as asked"))
    if payload.get("permanent"):
        raise PermanentFailure(message)
    raise RuntimeError(message)


def builtin_tasks(http_allow: tuple[str, ...] = (), http_allow_private: bool = False) -> dict[str, Handler]:
    """The built-in tasks by name; `http` under the given host policy (GNOMON_HTTP_ALLOW[_PRIVATE])."""
    return {"noop": noop, "sleep": sleep, "fail": fail,
            "http": make_http_task(http_allow, http_allow_private)}
