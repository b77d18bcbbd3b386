"""The Dispatcher port in process memory: the fake for unit tests and the queue of `gnomon dev`.

It keeps the contract and the ordering rule of the Redis adapter (tests/contracts/dispatcher.py,
docs/design.md "Dispatch on Redis"): highest priority first; within a priority, the k-th id of a push scored
`now + k * pace`, lowest score first, so a batch keeps its order and an id pushed later alone overtakes the
rest of it; an id already waiting is not added again. Its state is plain (`sets`: queue -> priority -> heap of
(score, sequence, id)), and `waiting` shows it in pop order, so a test can look at what waits. The token buckets
of rate-limited pops (`buckets`: queue -> (tokens, as of)) refill on the same `clock`, which a test may move by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from attrs import define, field, validators

from application.ports import Dispatchable

PRIORITIES: Final = range(9, -1, -1)  # popped in this order
MIN_TOKEN_WAIT_SECONDS: Final = 0.005  # a rated pop without tokens waits this long at least before it returns

Entry = tuple[float, int, str]  # score, then the push sequence (FIFO among equal scores), then the id


def _priority(job: Dispatchable) -> int:
    # The domain keeps priorities in 0..9; clamping keeps a stray value from stranding a job in a set that
    # nothing pops (the Redis adapter does the same).
    return min(max(job.priority, 0), 9)


@define
class InMemoryDispatcher:
    sets: dict[str, dict[int, list[Entry]]] = field(factory=dict)
    pace: float = field(default=0.002, kw_only=True, validator=validators.ge(0))
    clock: Callable[[], float] = field(default=time.monotonic, kw_only=True)
    buckets: dict[str, tuple[float, float]] = field(factory=dict, kw_only=True)  # queue -> (tokens, as of clock())
    _members: dict[tuple[str, int], set[str]] = field(factory=dict, init=False, repr=False)
    _sequence: Iterator[int] = field(factory=itertools.count, init=False, repr=False)
    # Replaced on every push: a pop waits on the event current when it found nothing, so any later push
    # wakes it. No polling.
    _pushed: asyncio.Event = field(factory=asyncio.Event, init=False, repr=False)

    async def push(self, jobs: Sequence[Dispatchable]) -> None:
        now = self.clock()
        batches: dict[tuple[str, int], int] = {}  # ids pushed so far per set: k of the next one
        for job in jobs:
            where = (job.queue, _priority(job))
            k = batches.get(where, 0)
            batches[where] = k + 1
            members = self._members.setdefault(where, set())
            if job.id not in members:
                members.add(job.id)
                heap = self.sets.setdefault(job.queue, {}).setdefault(where[1], [])
                heapq.heappush(heap, (now + k * self.pace, next(self._sequence), job.id))
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

    async def pop_rated(self, queue: str, *, limit: int, rate: float, burst: float, timeout: float) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            pushed = self._pushed
            now = self.clock()
            tokens, since = self.buckets.get(queue, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - since) * rate)
            granted = max(0, min(limit, int(tokens)))
            ids = self._take([queue], granted) if granted else []
            self.buckets[queue] = (tokens - len(ids), now)
            if ids or limit < 1:
                return ids
            if not granted:  # no token: come back when the next one may be there
                await asyncio.sleep(max(0.0, min(timeout, max(MIN_TOKEN_WAIT_SECONDS, 1 / rate))))
                return []
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pushed.wait(), remaining)

    async def size(self, queue: str) -> int:
        return sum(len(heap) for heap in self.sets.get(queue, {}).values())

    def waiting(self, queue: str) -> dict[int, list[str]]:
        """The ids of `queue` per priority, each list in the order they would be popped."""
        return {priority: [job_id for *_, job_id in sorted(heap)]
                for priority, heap in self.sets.get(queue, {}).items() if heap}

    def _take(self, queues: Sequence[str], limit: int) -> list[str]:
        for queue in queues:
            sets = self.sets.get(queue, {})
            ids: list[str] = []
            for priority in PRIORITIES:
                heap = sets.get(priority)
                while heap and len(ids) < limit:
                    job_id = heapq.heappop(heap)[2]
                    self._members[(queue, priority)].discard(job_id)
                    ids.append(job_id)
            if ids:
                return ids
        return []
