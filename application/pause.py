"""How a loop of the worker waits after failures (docs/design.md, "Workers": outages are waited out, not fatal)."""

from __future__ import annotations

import asyncio
import contextlib

from attrs import define


@define
class Pause:
    """How long a loop waits after consecutive failures: doubling from `first` up to `most`."""

    first: float
    most: float
    failures: int = 0

    def failed(self) -> float:
        self.failures += 1
        return min(self.first * 2 ** (self.failures - 1), self.most)

    def succeeded(self) -> None:
        self.failures = 0


async def sleep_unless(event: asyncio.Event | None, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` is set meanwhile."""
    if event is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
