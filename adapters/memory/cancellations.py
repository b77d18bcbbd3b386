"""The Cancellations port in process memory: a canceller in the same process tells the worker at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from attrs import define, field


@define
class InMemoryCancellations:
    announced: list[str] = field(factory=list)  # waiting for the next listen
    _event: asyncio.Event = field(factory=asyncio.Event, init=False, repr=False)

    async def announce(self, job_ids: Sequence[str]) -> None:
        self.announced.extend(job_ids)
        if job_ids:
            self._event.set()

    async def listen(self, timeout: float) -> list[str]:
        if timeout > 0 and not self.announced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        ids, self.announced = self.announced, []
        return ids
