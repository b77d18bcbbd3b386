"""The Wakeup port in process memory: a submitter in the same process wakes a sleeping scheduler."""

from __future__ import annotations

import asyncio
import contextlib

from attrs import define, field


@define
class InMemoryWakeup:
    # Stays set until a wait consumes it: a notify that lands while the scheduler is busy (between
    # computing its sleep and starting it) is not lost, the next wait returns at once.
    _event: asyncio.Event = field(factory=asyncio.Event, init=False, repr=False)

    async def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        if timeout > 0 and not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    @property
    def pending(self) -> bool:
        """True while a notify waits to be consumed."""
        return self._event.is_set()
