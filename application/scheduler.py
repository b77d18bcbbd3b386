"""The scheduler tick and the loop around it. Any number of replicas may run: every step is a set-based,
row-locked or fenced operation in the repositories, so they share the work instead of repeating it."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Final

from attrs import define, evolve, field, frozen

from application import reporting
from application.identity import new_id
from application.manage_jobs import after_cancels
from application.ports import (
    IN_FLIGHT,
    NO_METRICS,
    Cancellations,
    Clock,
    Dispatchable,
    Dispatcher,
    Finished,
    JobRepository,
    Metrics,
    QueueStats,
    ScheduleRepository,
    Wakeup,
)
from application.submit_jobs import dispatch
from domain.errors import DomainError, StaleWrite, Unavailable
from domain.job import Job
from domain.schedule import Firing, Schedule

log = logging.getLogger("gnomon.scheduler")
TOTALS_EVERY: Final = 60.0  # seconds between the loop's counts of every state of every queue (SchedulerLoop)


@frozen(kw_only=True)
class TickSettings:
    batch: int = 5000
    dispatch_timeout: timedelta = timedelta(seconds=30)
    sweep_every: timedelta = timedelta(seconds=2)  # lease rescue and re-dispatch look-ups
    retention: timedelta = timedelta(days=7)
    prune_batch: int = 1000
    prune_batches_per_sweep: int = 20


@frozen(kw_only=True)
class TickReport:
    promoted: int = 0
    fired: int = 0
    rescued: int = 0
    redispatched: int = 0
    woken: int = 0  # held jobs woken by the sweep (flow control: a lost wake-up)
    pruned: int = 0
    busy: bool = False  # a batch came back full: tick again at once


@frozen
class SchedulerTick:
    jobs: JobRepository
    schedules: ScheduleRepository
    dispatcher: Dispatcher
    clock: Clock
    settings: TickSettings = TickSettings()
    metrics: Metrics = NO_METRICS
    cancellations: Cancellations | None = None  # tells workers at once of jobs a cancel_other cancelled

    async def __call__(self, *, sweep: bool = True) -> TickReport:
        started = time.perf_counter()  # a duration, not an instant: the monotonic clock is the right one
        report = await self._tick(sweep)
        self.metrics.tick_duration(time.perf_counter() - started)
        return report

    async def _tick(self, sweep: bool) -> TickReport:
        now = self.clock.now()
        promoted = await self.jobs.promote_due(now, self.settings.batch)
        fired = await self.schedules.fire_due(now, self.settings.batch, self._plan(now))
        self.metrics.jobs_promoted(len(promoted))
        self.metrics.jobs_fired(len(fired.jobs))
        queued: list[Dispatchable] = [*promoted, *(j for j in fired.jobs if j.state.value == "queued"), *fired.woken]
        await dispatch(self.dispatcher, queued)
        await after_cancels(fired.cancelled, fired.woken, dispatcher=None, cancellations=self.cancellations,
                            metrics=self.metrics)
        rescued = redispatched = woken = pruned = 0
        if sweep:
            rescued = await self._rescue(now)
            stale = now - self.settings.dispatch_timeout
            again = await self.jobs.redispatch(now, stale, self.settings.batch)
            # Held jobs whose wake-up was lost (a worker killed between its write and its push): a held job
            # waits at most the dispatch timeout past the moment its slot freed.
            late = await self.jobs.wake(now, limit=self.settings.batch, held_before=stale)
            await dispatch(self.dispatcher, again + late)
            redispatched, woken = len(again), len(late)
            self.metrics.redispatches(redispatched + woken)
            reporting.woken(self.metrics, late, by=reporting.BY_SWEEP)
            pruned = await self._prune(now)
        busy = len(promoted) >= self.settings.batch or len(fired.jobs) >= self.settings.batch
        return TickReport(promoted=len(promoted), fired=len(fired.jobs), rescued=rescued,
                          redispatched=redispatched, woken=woken, pruned=pruned, busy=busy)

    async def _prune(self, now: datetime) -> int:
        """Retention in small batches (short transactions, no long locks), enough of them per sweep to keep
        up with thousands of jobs finishing per second."""
        pruned = 0
        for _ in range(self.settings.prune_batches_per_sweep):
            deleted = await self.jobs.prune(now - self.settings.retention, self.settings.prune_batch)
            pruned += deleted
            if deleted < self.settings.prune_batch:
                break
        return pruned

    @staticmethod
    def _plan(now: datetime):
        def plan(schedule: Schedule, previous: Job | None) -> Firing:
            return schedule.plan(now=now, previous=previous, new_id=new_id)
        return plan

    async def _rescue(self, now: datetime) -> int:
        """Jobs whose worker went quiet past its lease: the attempt counts as `lost`."""
        rescued: list[Finished] = []
        woken: list[Job] = []
        for job in await self.jobs.expired(now, self.settings.batch):
            lost, run = job.lose(now=now)
            try:
                woken += await self.jobs.save(lost, run)  # its slot (key, queue) frees: held jobs may go
            except StaleWrite:
                continue  # the worker finished, or another replica rescued it, meanwhile
            log.warning("job %s lost its worker %s (attempt %d): %s", job.id,
                        job.lease.worker_id if job.lease else "?", job.attempt, lost.state)
            rescued.append(Finished(job=lost, run=run))
        await dispatch(self.dispatcher, woken)
        reporting.woken(self.metrics, woken, by=reporting.BY_RESCUE)
        self.metrics.lease_rescues(len(rescued))
        reporting.finished(self.metrics, rescued)
        return len(rescued)


@define
class SchedulerLoop:
    """Tick, then sleep until the next due time (or a wake-up from a submitter), forever."""

    tick: SchedulerTick
    jobs: JobRepository
    schedules: ScheduleRepository
    wakeup: Wakeup
    clock: Clock
    max_sleep: float = 2.0
    # Seconds between attempts after failed ticks: 0.5, 1, 2... up to this. Small, because a tick that fails
    # fast (the database refuses connections) is cheap to retry, one that fails slowly already waited out the
    # pool's timeout, and each second slept after PostgreSQL is back makes every due job a second late.
    max_backoff: float = 2.0
    stats_every: float | None = None  # seconds between queue gauge updates; None: never
    # Seconds between counts of every state: waiting and finished jobs take a scan of the table, the jobs in
    # flight (counted at every update) only theirs. In between, the gauges keep the last counts of the others.
    totals_every: float = TOTALS_EVERY
    stopping: asyncio.Event = field(factory=asyncio.Event)
    ticks: int = 0
    last_sweep: datetime | None = None
    last_stats: datetime | None = None
    last_totals: datetime | None = None
    totals: dict[str, dict[str, int]] = field(factory=dict)  # by queue: the last counts of every state

    async def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                report = await self._tick_once()
                await self._report_queues()
                delay = 0.0 if report.busy else await self._sleep_for()
                failures = 0
            except Exception as exc:  # whatever broke one tick, the next may succeed: never end the loop
                failures += 1
                delay = min(self.max_backoff, 0.5 * 2.0 ** (failures - 1))
                expected = isinstance(exc, Unavailable | DomainError)
                log.error("scheduler tick failed (%d in a row), retrying in %g s: %s", failures, delay,
                          exc if expected else repr(exc), exc_info=None if expected else exc)
            if delay > 0:
                await self.wakeup.wait(delay)

    async def _tick_once(self) -> TickReport:
        now = self.clock.now()
        sweep = self.last_sweep is None or now - self.last_sweep >= self.tick.settings.sweep_every
        if sweep:
            self.last_sweep = now
        report = await self.tick(sweep=sweep)
        self.ticks += 1
        if report.promoted or report.fired or report.rescued or report.redispatched or report.woken:
            log.info("tick: %s", report)
        return report

    async def _report_queues(self) -> None:
        """Refresh the queue gauges from the repository every `stats_every` seconds: the jobs in flight each time,
        every state every `totals_every` seconds."""
        now = self.clock.now()
        if self.stats_every is None or (self.last_stats and (now - self.last_stats).total_seconds() < self.stats_every):
            return
        self.last_stats = now
        full = self.last_totals is None or (now - self.last_totals).total_seconds() >= self.totals_every
        stats = await self.jobs.queue_stats(now, totals=full)
        if full:
            self.last_totals = now
            self.totals = {entry.queue: entry.counts for entry in stats}
        else:
            stats = with_totals(stats, self.totals)
        self.tick.metrics.queue_stats(stats, now)

    async def _sleep_for(self) -> float:
        now = self.clock.now()
        due = [t for t in (await self.jobs.next_due_at(), await self.schedules.next_due_at()) if t is not None]
        horizon = min(due, default=now + timedelta(seconds=self.max_sleep))
        return max(0.0, min((horizon - now).total_seconds(), self.max_sleep))

    def stop(self) -> None:
        self.stopping.set()


def with_totals(in_flight: list[QueueStats], totals: dict[str, dict[str, int]]) -> list[QueueStats]:
    """Counts of the jobs in flight completed with the last counts of the other states; a queue with nothing in
    flight now keeps its last counts (with none in flight), so that its gauges do not come and go."""
    none = {str(state): 0 for state in IN_FLIGHT}
    fresh = {entry.queue: entry for entry in in_flight}
    merged = [evolve(entry, counts={**totals.get(entry.queue, {}), **none, **entry.counts}) for entry in in_flight]
    merged += [QueueStats(queue=queue, counts={**counts, **none}, oldest_queued_at=None, finished_last_minute=0)
               for queue, counts in totals.items() if queue not in fresh]
    return sorted(merged, key=lambda entry: entry.queue)
