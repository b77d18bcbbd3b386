"""User tasks for the worker-process tests, loaded by `gnomon worker` through GNOMON_TASKS.

Tasks that wait for the test ("gates") block until a file exists, so a test decides when they end without
guessing durations; tasks that must show they were reached by a cancellation write a marker file.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.02


def where(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Sync: returns the thread it ran on and what the context said, so a test can check both."""
    return {"thread": threading.current_thread().name, "job_id": ctx.job_id, "attempt": ctx.attempt,
            "echo": payload}


async def gate(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Async: waits until the file payload["open"] exists. On asyncio cancellation (a cancel, a timeout,
    the end of a drain) it writes payload["marker"], when given, and lets the cancellation go on."""
    opened = Path(payload["open"])
    try:
        # Polling a local file from the event loop on purpose: it is what another process can signal with.
        while not opened.exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(POLL_SECONDS)
    except asyncio.CancelledError:
        if "marker" in payload:
            Path(payload["marker"]).write_text(f"cancelled attempt {ctx.attempt}")  # noqa: ASYNC240
        raise
    return {"opened": True, "attempt": ctx.attempt}


def sync_gate(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Sync (thread pool): as `gate`, but stops cooperatively once ctx.cancelled is true."""
    opened = Path(payload["open"])
    while not opened.exists():
        if ctx.cancelled:
            if "marker" in payload:
                Path(payload["marker"]).write_text(f"cancelled attempt {ctx.attempt}")
            return {"cancelled": True}
        time.sleep(POLL_SECONDS)
    return {"opened": True, "thread": threading.current_thread().name}


def ghost(payload: dict[str, Any], ctx: Any) -> None:
    """Registered for the submitting side only: the worker of the test does not know it."""
    raise AssertionError("never runs: the worker of the test has no such task")


def stubborn(payload: dict[str, Any], ctx: Any) -> None:
    """Sync and deaf to ctx.cancelled: sleeps payload["seconds"] whatever happens (a badly behaved handler)."""
    time.sleep(payload["seconds"])
