"""The Dispatcher port in process memory: the fake for unit tests and the queue of `gnomon dev`.

Its state is plain and visible (`lists`: queue -> priority -> ids), so a test can look at what waits. It keeps
the contract of the Redis adapter (tests/contracts/dispatcher.py): highest priority first, FIFO within a
priority, a batch from the first non-empty queue only, duplicates delivered as pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Final

from attrs import define, field

from domain.job import Job

PRIORITIES: Final = range(9, -1, -1)  # popped in this order


def _priority(job: Job) -> int:
    # The domain keeps priorities in 0..9; clamping keeps a stray value from stranding a job in a list
    # that nothing pops (the Redis adapter does the same).
    return min(max(job.priority, 0), 9)


@define
class InMemoryDispatcher:
    lists: dict[str, dict[int, deque[str]]] = field(factory=dict)
    # Replaced on every push: a pop waits on the event current when it found nothing, so any later push
    # wakes it. No polling.
    _pushed: asyncio.Event = field(factory=asyncio.Event, init=False, repr=False)

    async def push(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.lists.setdefault(job.queue, {}).setdefault(_priority(job), deque()).append(job.id)
        if jobs:
            self._pushed.set()
            self._pushed = asyncio.Event()

    async def pop(self, queues: Sequence[str], *, limit: int, timeout: float) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            pushed = self._pushed
            if ids := self._take(queues, limit):
                return ids
            remaining = deadline - loop.time()
            if remaining <= 0 or limit < 1 or not queues:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pushed.wait(), remaining)

    async def size(self, queue: str) -> int:
        return sum(len(ids) for ids in self.lists.get(queue, {}).values())

    def _take(self, queues: Sequence[str], limit: int) -> list[str]:
        for queue in queues:
            lists = self.lists.get(queue, {})
            ids: list[str] = []
            for priority in PRIORITIES:
                waiting = lists.get(priority)
                while waiting and len(ids) < limit:
                    ids.append(waiting.popleft())
            if ids:
                return ids
        return []
