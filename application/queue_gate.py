"""The worker's side of flow control (SPEC §6, docs/design.md "Flow control"): which of its queues it may pop, and
how many jobs of a rate-limited queue.

The settings of the worker's queues are read from the repository every `refresh_every` seconds (one small query
per worker per second), so a PATCH reaches every worker within a second without a restart. A paused queue is not
popped (the claim would hold its jobs anyway). A queue with max_per_second is popped only for the tokens its
shared bucket grants (Dispatcher.pop_rated, which pays only for the ids it finds). A worker of one rate-limited
queue waits on it (for an id, holding no token: it pays when the id comes); a worker of several queues looks at the
rate-limited ones again every `poll` seconds. Without rate limits a pop is the one blocking pop of the dispatcher
over all open queues, as without flow control.
"""

from __future__ import annotations

import asyncio

from attrs import define, field

from application.ports import Dispatcher, QueueSettingsRepository
from domain.flow import QueueSettings


@define
class QueueGate:
    settings: QueueSettingsRepository
    queues: tuple[str, ...]
    refresh_every: float = 1.0
    poll: float = 0.1  # how soon an idle worker looks again at a rate-limited queue
    known: dict[str, QueueSettings] = field(factory=dict)

    async def refresh(self) -> None:
        """Read the settings of this worker's queues (kept as they were when the read fails)."""
        found = await self.settings.all()
        self.known = {s.queue: s for s in found if s.queue in self.queues}

    async def watch(self) -> None:
        """One step of the worker's settings loop: refresh, then wait."""
        await self.refresh()
        await asyncio.sleep(self.refresh_every)

    @property
    def limited(self) -> frozenset[str]:
        """The queues whose starts the claim must count (paused, or with max_running)."""
        return frozenset(q for q, s in self.known.items() if s.limits_starts)

    async def pop(self, dispatcher: Dispatcher, *, limit: int, timeout: float) -> list[str]:
        """Up to `limit` ids from the first open queue that has some, within its rate; waits up to `timeout` s."""
        open_queues = [q for q in self.queues if not self._paused(q)]
        rated = {q: s for q in open_queues if (s := self.known.get(q)) is not None and s.max_per_second}
        if not rated:
            if open_queues:
                return await dispatcher.pop(open_queues, limit=limit, timeout=timeout)
            await asyncio.sleep(min(timeout, self.refresh_every))
            return []
        if len(open_queues) == 1:  # one queue, rate-limited: wait on it with the tokens in hand, like a plain pop
            [(queue, settings)] = rated.items()
            return await self._pop_one(dispatcher, queue, settings, limit, timeout=timeout)
        for queue in open_queues:
            ids = await self._pop_one(dispatcher, queue, rated.get(queue), limit)
            if ids:
                return ids
        plain = [q for q in open_queues if q not in rated]
        wait = min(timeout, self.poll)
        if plain:
            return await dispatcher.pop(plain, limit=limit, timeout=wait)
        await asyncio.sleep(wait)
        return []

    async def _pop_one(self, dispatcher: Dispatcher, queue: str, settings: QueueSettings | None,
                       limit: int, *, timeout: float = 0) -> list[str]:
        """Pop the queue, within its start rate if it has one; wait up to `timeout` s."""
        if settings is None or settings.max_per_second is None:
            return await dispatcher.pop([queue], limit=limit, timeout=timeout)
        return await dispatcher.pop_rated(queue, limit=limit, rate=settings.max_per_second, burst=settings.burst,
                                          timeout=timeout)

    def _paused(self, queue: str) -> bool:
        found = self.known.get(queue)
        return found is not None and found.paused
