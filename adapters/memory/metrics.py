"""Metrics kept in plain dicts: what a test reads to check what the use cases reported.

The no-op `NoMetrics` lives in application/ports.py, beside the port, because it is the default of every use
case and the core may not import adapters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from attrs import define, field

from application.ports import QueueStats


@define
class RecordingMetrics:
    counters: Counter[tuple[str, ...]] = field(factory=Counter)  # (name, *labels) -> total
    observations: dict[tuple[str, ...], list[float]] = field(factory=dict)  # (name, *labels) -> values
    calls: Counter[str] = field(factory=Counter)  # method name -> how often it was called
    gauges: dict[tuple[str, ...], float] = field(factory=dict)

    def _count(self, *key: str, n: int) -> None:
        self.calls[key[0]] += 1
        self.counters[key] += n

    def _observe(self, *key: str, value: float) -> None:
        self.calls[key[0]] += 1
        self.observations.setdefault(key, []).append(value)

    def _observe_many(self, *key: str, values: Sequence[float]) -> None:
        self.calls[key[0]] += 1
        self.observations.setdefault(key, []).extend(values)

    def jobs_submitted(self, queue: str, task: str, n: int) -> None:
        self._count("submitted", queue, task, n=n)

    def jobs_fired(self, n: int) -> None:
        self._count("fired", n=n)

    def jobs_promoted(self, n: int) -> None:
        self._count("promoted", n=n)

    def jobs_claimed(self, queue: str, n: int) -> None:
        self._count("claimed", queue, n=n)

    def jobs_finished(self, queue: str, task: str, outcome: str, n: int) -> None:
        self._count("finished", queue, task, outcome, n=n)

    def run_durations(self, task: str, seconds: Sequence[float]) -> None:
        self._observe_many("run_duration", task, values=seconds)

    def lateness(self, queue: str, seconds: Sequence[float]) -> None:
        self._observe_many("lateness", queue, values=seconds)

    def tick_duration(self, seconds: float) -> None:
        self._observe("tick_duration", value=seconds)

    def lease_rescues(self, n: int) -> None:
        self._count("rescued", n=n)

    def redispatches(self, n: int) -> None:
        self._count("redispatched", n=n)

    def jobs_woken(self, queue: str, by: str, n: int) -> None:
        self._count("woken", queue, by, n=n)

    def queue_stats(self, stats: Sequence[QueueStats], now: datetime) -> None:
        self.calls["queue_stats"] += 1
        self.gauges = {}
        for entry in stats:
            for state, n in entry.counts.items():
                self.gauges["depth", entry.queue, state] = n
            for reason, n in entry.held.items():
                self.gauges["held", entry.queue, str(reason)] = n
            oldest = entry.oldest_queued_at
            self.gauges["oldest_age", entry.queue] = 0.0 if oldest is None else (now - oldest).total_seconds()

    def total(self, name: str) -> int:
        """The sum of a counter over all its labels."""
        return sum(n for key, n in self.counters.items() if key[0] == name)
