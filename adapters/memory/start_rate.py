"""The StartRate port in process memory: one token bucket per queue, refilled by the clock it is given (a
FrozenClock in tests, so a test decides when tokens come back)."""

from __future__ import annotations

from datetime import datetime

from attrs import define, field

from application.ports import Clock


@define
class InMemoryStartRate:
    clock: Clock
    buckets: dict[str, tuple[float, datetime]] = field(factory=dict)  # queue -> (tokens, as of)

    async def take(self, queue: str, n: int, *, rate: float, burst: float) -> int:
        tokens = self._level(queue, rate, burst)
        granted = max(0, min(n, int(tokens)))
        self.buckets[queue] = (tokens - granted, self.clock.now())
        return granted

    async def refund(self, queue: str, n: int, *, burst: float) -> None:
        tokens, since = self.buckets.get(queue, (burst, self.clock.now()))
        self.buckets[queue] = (min(burst, tokens + max(n, 0)), since)

    def _level(self, queue: str, rate: float, burst: float) -> float:
        now = self.clock.now()
        tokens, since = self.buckets.get(queue, (burst, now))
        return min(burst, tokens + max(0.0, (now - since).total_seconds()) * rate)
