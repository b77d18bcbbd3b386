"""The Metrics port on prometheus-client: counters by queue/task/outcome, latency histograms, queue gauges.

Every metric lives in a registry given at construction (one per process, made by `process_registry`), not in
prometheus-client's global one, so that a test can build as many as it likes. The processes of `gnomon api
--workers N` serve a `MultiprocessRegistry` instead: the sum over all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from application.ports import QueueStats
from application.reporting import HELD_REASONS

RUN_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENESS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
TICK_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# How the gauges combine across processes under multiprocess mode: the newest value wins, each being a snapshot
# of the database rather than a share of a sum. Only the scheduler sets them, and it never runs in that mode; the
# API's processes, which do, never set them. (There, clear() would not reach values already in the files.)
SNAPSHOT: Final = "mostrecent"


def process_registry() -> CollectorRegistry:
    """A registry with the process's CPU, memory, file descriptors, GC and Python version."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MultiprocessRegistry(CollectorRegistry):
    """The registry of one process among several that share prometheus-client's multiprocess directory
    (PROMETHEUS_MULTIPROC_DIR, set before the processes start, so that every metric value lives in a file of it).

    Metrics register in it as usual (names are still checked), but it collects the files of every process,
    summed, not this process's own values: otherwise they would be counted twice. Files of processes that have
    died stay in the sum, so a counter never goes back. Only python_info (the same in every process) joins them:
    the process and GC collectors measure the process that answers, which would pass for the sum.
    """

    def __init__(self) -> None:
        super().__init__()
        self._files = MultiProcessCollector(None)  # raises ValueError unless the directory is set and exists
        self._platform = PlatformCollector(registry=None)

    def collect(self) -> Iterator[Metric]:
        yield from self._files.collect()
        yield from self._platform.collect()


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class PrometheusMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self._submitted = Counter("gnomon_jobs_submitted", "Jobs stored by a submit", ["queue", "task"], registry=r)
        self._fired = Counter("gnomon_jobs_fired", "Jobs created by schedules firing", registry=r)
        self._promoted = Counter("gnomon_jobs_promoted", "Scheduled or retry jobs queued when due", registry=r)
        self._claimed = Counter("gnomon_jobs_claimed", "Jobs started by a worker", ["queue"], registry=r)
        self._finished = Counter("gnomon_jobs_finished", "Attempts ended, by outcome",
                                 ["queue", "task", "outcome"], registry=r)
        self._run = Histogram("gnomon_job_run_duration_seconds", "Duration of an attempt", ["task"],
                              buckets=RUN_BUCKETS, registry=r)
        self._lateness = Histogram("gnomon_job_lateness_seconds", "Start of an attempt minus its due time",
                                   ["queue"], buckets=LATENESS_BUCKETS, registry=r)
        self._tick = Histogram("gnomon_scheduler_tick_duration_seconds", "Duration of a scheduler tick",
                               buckets=TICK_BUCKETS, registry=r)
        self._rescues = Counter("gnomon_lease_rescues", "Attempts recorded lost after their lease expired",
                                registry=r)
        self._redispatches = Counter("gnomon_redispatches", "Queued jobs pushed again after the dispatch timeout",
                                     registry=r)
        self._depth = Gauge("gnomon_queue_jobs", "Jobs in a queue by state (updated by the scheduler)",
                            ["queue", "state"], registry=r, multiprocess_mode=SNAPSHOT)
        self._held = Gauge("gnomon_queue_held_jobs",
                           "Queued jobs held back by flow control, by reason: concurrency_key or queue (updated by "
                           "the scheduler; also counted in gnomon_queue_jobs{state=\"queued\"})",
                           ["queue", "reason"], registry=r, multiprocess_mode=SNAPSHOT)
        self._woken = Counter("gnomon_jobs_woken", "Held jobs dispatched because a slot freed, by who woke them "
                              "(finish, cancel, rescue, queue_change; sweep: a lost wake-up made up for late)",
                              ["queue", "by"], registry=r)
        self._oldest = Gauge("gnomon_queue_oldest_queued_age_seconds",
                             "Age of the oldest queued job past its due time (updated by the scheduler)",
                             ["queue"], registry=r, multiprocess_mode=SNAPSHOT)

    def jobs_submitted(self, queue: str, task: str, n: int) -> None:
        self._submitted.labels(queue, task).inc(n)

    def jobs_fired(self, n: int) -> None:
        self._fired.inc(n)

    def jobs_promoted(self, n: int) -> None:
        self._promoted.inc(n)

    def jobs_claimed(self, queue: str, n: int) -> None:
        self._claimed.labels(queue).inc(n)

    def jobs_finished(self, queue: str, task: str, outcome: str, n: int) -> None:
        self._finished.labels(queue, task, outcome).inc(n)

    def run_durations(self, task: str, seconds: Sequence[float]) -> None:
        observe = self._run.labels(task).observe  # the labels' lookup (~1.5 us) once per batch, not per job
        for value in seconds:
            observe(value)

    def lateness(self, queue: str, seconds: Sequence[float]) -> None:
        observe = self._lateness.labels(queue).observe
        for value in seconds:
            observe(value)

    def tick_duration(self, seconds: float) -> None:
        self._tick.observe(seconds)

    def lease_rescues(self, n: int) -> None:
        self._rescues.inc(n)

    def redispatches(self, n: int) -> None:
        self._redispatches.inc(n)

    def jobs_woken(self, queue: str, by: str, n: int) -> None:
        self._woken.labels(queue, by).inc(n)

    def queue_stats(self, stats: Sequence[QueueStats], now: datetime) -> None:
        # Cleared first: a queue that no longer holds any job drops out instead of keeping its last figures.
        self._depth.clear()
        self._held.clear()
        self._oldest.clear()
        for entry in stats:
            for state, n in entry.counts.items():
                self._depth.labels(entry.queue, state).set(n)
            for reason, label in HELD_REASONS.items():
                self._held.labels(entry.queue, label).set(entry.held.get(reason, 0))
            oldest = entry.oldest_queued_at
            self._oldest.labels(entry.queue).set(0.0 if oldest is None else max((now - oldest).total_seconds(), 0))
