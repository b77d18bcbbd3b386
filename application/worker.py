"""The worker: claim batches, run handlers under a lease with a timeout, record outcomes in batches,
heartbeat, react to cancellation, drain on shutdown. At-least-once: a worker that dies mid-job leaves a
lease that expires, and the scheduler retries the job. Losing PostgreSQL or Redis for a while is not an
error: every loop logs, backs off and tries again (docs/design.md, "Workers")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from attrs import define, field, frozen

from application import reporting
from application.attempt import Attempt, Runner, arm_timeouts
from application.pause import Pause, sleep_unless
from application.ports import (
    NO_METRICS,
    Cancellations,
    Clock,
    Dispatcher,
    Finished,
    JobRepository,
    Metrics,
    TaskRegistry,
)
from application.queue_gate import QueueGate
from application.submit_jobs import dispatch
from application.task_context import JobContext
from domain.errors import LeaseLost, Unavailable
from domain.job import Job

log = logging.getLogger("gnomon.worker")


@frozen(kw_only=True)
class WorkerSettings:
    worker_id: str
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 16
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    shutdown_grace_seconds: float = 30.0
    pop_timeout: float = 1.0
    flush_window: float = 0.005  # group commit: outcomes arriving within it share one write
    first_pause: float = 0.1  # after a failure a loop waits this long, doubling up to max_pause
    max_pause: float = 2.0


@define
class Worker:
    jobs: JobRepository
    dispatcher: Dispatcher
    tasks: TaskRegistry
    clock: Clock
    settings: WorkerSettings
    metrics: Metrics = NO_METRICS
    cancellations: Cancellations | None = field(default=None, kw_only=True)  # None: learnt at heartbeats only
    gate: QueueGate | None = field(default=None, kw_only=True)  # flow control (queue settings); None: no limits
    held: dict[str, Attempt] = field(factory=dict)
    outbox: list[Finished] = field(factory=list)
    _recording: list[Finished] = field(factory=list)  # taken out of the outbox, being written
    executed: int = 0
    _stopping: asyncio.Event = field(factory=asyncio.Event)
    _closing: asyncio.Event = field(factory=asyncio.Event)  # drained: the recorder writes what it holds and ends
    _slot_freed: asyncio.Event = field(factory=asyncio.Event)
    _outbox_ready: asyncio.Event = field(factory=asyncio.Event)
    _beat_now: asyncio.Event = field(factory=asyncio.Event)
    _runner: Runner | None = None
    _unclaimed: list[str] = field(factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Work until stop() is called, then drain and return."""
        self._loop = asyncio.get_running_loop()
        threads = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="gnomon-task")
        self._runner = Runner(self.tasks, self.clock, threads, self.settings.worker_id)
        # The recorder is stopped, never cancelled: a write cancelled after it committed would be made again by
        # the final flush and refused by the fence (logged as lost leases, metrics skipped).
        recorder = asyncio.create_task(self._forever("recording outcomes", self._flush_when_ready,
                                                     until=self._closing))
        helpers = [asyncio.create_task(self._forever("heartbeat", self._beat))]
        if self.cancellations is not None:
            helpers.append(asyncio.create_task(self._forever("cancellation notices", self._watch_cancels)))
        if self.gate is not None:
            with contextlib.suppress(Unavailable):  # known before the first pop, when the database answers
                await self.gate.refresh()
            helpers.append(asyncio.create_task(self._forever("queue settings", self.gate.watch)))
        try:
            await self._forever("claim", self._claim_free, until=self._stopping)
            await self._drain()
        finally:
            for helper in helpers:
                helper.cancel()
            self._closing.set()
            self._outbox_ready.set()
            await asyncio.gather(recorder, *helpers, return_exceptions=True)
            await self._final_flush()
            threads.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        self._stopping.set()
        self._slot_freed.set()

    async def _forever(self, what: str, step: Callable[[], Awaitable[None]], *,
                       until: asyncio.Event | None = None) -> None:
        """Run `step` again and again; a failure is logged and paused on, never the end of the loop."""
        pause = Pause(self.settings.first_pause, self.settings.max_pause)
        while until is None or not until.is_set():
            try:
                await step()
            except Unavailable as exc:
                wait = pause.failed()
                log.error("%s failed (%d in a row), retrying in %.1f s: %s", what, pause.failures, wait, exc)
            except Exception:  # a bug must not stop the worker's heartbeats or records: log it, go on
                wait = pause.failed()
                log.exception("%s failed (%d in a row), retrying in %.1f s", what, pause.failures, wait)
            else:
                pause.succeeded()
                continue
            await sleep_unless(until, wait)

    async def _claim_free(self) -> None:
        free = self.settings.concurrency - len(self.held)
        if free <= 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()
            return
        # Ids whose claim failed (PostgreSQL away) are claimed again before popping more: not lost meanwhile.
        retrying = bool(self._unclaimed)
        ids = self._unclaimed or await self._pop(free)
        if not ids or self._stopping.is_set():
            return  # ids popped during shutdown stay queued in PostgreSQL: re-dispatched after the timeout
        self._unclaimed = ids
        now = self.clock.now()
        claimed = await self.jobs.claim(ids, worker_id=self.settings.worker_id, now=now,
                                        lease_seconds=self.settings.lease_seconds, limited=self._limited())
        if retrying:
            claimed += await self._adopt(ids, claimed, now)
        self._unclaimed = []
        reporting.claimed(self.metrics, claimed)
        attempts = [Attempt(job=job, ctx=JobContext.of(job, self._request_beat)) for job in claimed]
        for attempt in attempts:
            self.held[attempt.job.id] = attempt
            attempt.task = asyncio.create_task(self._execute(attempt))
        arm_timeouts(attempts, asyncio.get_running_loop())

    async def _adopt(self, ids: list[str], claimed: list[Job], now: datetime) -> list[Job]:
        """A claim that failed may have committed all the same (the connection died before its answer came): its
        jobs then run under our lease, unknown to us. Run them rather than leave their leases to expire."""
        known = {job.id for job in claimed} | self.held.keys() | {item.job.id for item in self.unwritten()}
        orphans = [job_id for job_id in ids if job_id not in known]
        adopted = await self.jobs.adopt(orphans, worker_id=self.settings.worker_id, now=now) if orphans else []
        if adopted:
            log.warning("%d jobs were claimed by a claim whose answer was lost: running them", len(adopted))
        return adopted

    async def _pop(self, limit: int) -> list[str]:
        """Pop, but give up the wait as soon as stop() is called: shutdown does not wait out a pop."""
        timeout = self.settings.pop_timeout
        popping = asyncio.ensure_future(
            self.dispatcher.pop(self.settings.queues, limit=limit, timeout=timeout) if self.gate is None
            else self.gate.pop(self.dispatcher, limit=limit, timeout=timeout))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([popping, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not popping.done():
            popping.cancel()
            await asyncio.gather(popping, return_exceptions=True)
            return []
        return popping.result()

    async def _execute(self, attempt: Attempt) -> Finished | None:
        assert self._runner is not None
        try:
            outcome = await self._runner.outcome(attempt)
        finally:
            self.held.pop(attempt.job.id, None)
            self._slot_freed.set()
            if attempt.timer is not None:
                attempt.timer.ended(attempt)
        if outcome is not None:
            self.executed += 1
            self.outbox.append(outcome)
            self._outbox_ready.set()
        return outcome

    async def _flush_when_ready(self) -> None:
        await self._outbox_ready.wait()
        await asyncio.sleep(self.settings.flush_window)
        self._outbox_ready.clear()
        batch, self.outbox = self.outbox, []
        try:
            await self._write(batch)
        except BaseException:
            self._outbox_ready.set()
            raise

    async def _write(self, batch: list[Finished]) -> None:
        """Record a batch taken out of the outbox; if that fails (an outage), it goes back in front of the outbox
        for the next try. Meanwhile its jobs are still ours: renewed, never adopted (see `unwritten`)."""
        self._recording = batch
        try:
            await self._record(batch)
        except BaseException:
            self.outbox = batch + self.outbox
            raise
        finally:
            self._recording = []

    def unwritten(self) -> list[Finished]:
        """Outcomes not yet recorded: the batch being written and the outbox."""
        return self._recording + self.outbox

    async def _record(self, batch: list[Finished]) -> None:
        """One fenced write for the batch. A batch that fails for another reason than an outage is split
        until the outcome that cannot be written is alone; that one is dropped (its lease then expires and
        the attempt is recorded as lost), so one bad row never blocks the others."""
        if not batch:
            return
        try:
            recorded = await self.jobs.finish(batch, now=self.clock.now(), limited=self._limited())
        except Unavailable:
            raise
        except Exception:
            if len(batch) == 1:
                log.exception("job %s: its outcome cannot be recorded; dropped", batch[0].job.id)
                return
            half = len(batch) // 2
            await self._record(batch[:half])
            await self._record(batch[half:])
            return
        refused = recorded.refused
        await dispatch(self.dispatcher, recorded.woken)  # held jobs whose slots these outcomes freed
        reporting.woken(self.metrics, recorded.woken, by=reporting.BY_FINISH)
        lost = set(refused)
        reporting.finished(self.metrics, [f for f in batch if f.job.id not in lost])
        for job_id in refused:
            log.warning("outcome of job %s refused: its lease was lost (fenced)", job_id)

    def _limited(self) -> frozenset[str]:
        return frozenset() if self.gate is None else self.gate.limited

    async def _final_flush(self) -> None:
        """At exit: keep trying while a lease could still be valid; after that a write would be refused."""
        end = asyncio.get_running_loop().time() + self.settings.lease_seconds
        pause = Pause(self.settings.first_pause, self.settings.max_pause)
        while self.outbox:
            batch, self.outbox = self.outbox, []
            try:
                await self._write(batch)
            except Unavailable as exc:
                if asyncio.get_running_loop().time() >= end:
                    log.error("giving up on %d outcomes at exit (their leases will expire): %s", len(batch), exc)
                    return
                await asyncio.sleep(pause.failed())

    async def _beat(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._beat_now.wait(), timeout=self.settings.heartbeat_seconds)
        self._beat_now.clear()
        await self._renew()

    async def _renew(self) -> None:
        # Outcomes not yet written keep their leases too: a write that waits out an outage is not refused.
        attempts = list(self.held.values())
        leases = [(a.job.id, a.job.version) for a in attempts]
        leases += [(item.job.id, item.job.version - 1) for item in self.unwritten()]
        if not leases:
            return
        now, seconds = self.clock.now(), self.settings.lease_seconds
        lost = set(await self.jobs.renew(leases, now=now, lease_seconds=seconds))
        for attempt in attempts:
            if attempt.job.id in lost:
                self._stop_lost(attempt)
            else:
                with contextlib.suppress(LeaseLost):  # our own view of the lease moves with the stored one
                    attempt.job = attempt.job.renew(token=attempt.job.version, now=now, lease_seconds=seconds)

    def _stop_lost(self, attempt: Attempt) -> None:
        if attempt.task is not None and not attempt.lost:
            log.info("job %s was cancelled or its lease lost: stopping its handler", attempt.job.id)
            attempt.lost = True
            attempt.ctx.cancel()
            attempt.task.cancel()

    async def _watch_cancels(self) -> None:
        """A cancelled job's notice makes the next heartbeat happen now: the database says what was
        cancelled, the notice only says when to ask."""
        assert self.cancellations is not None
        ids = await self.cancellations.listen(timeout=self.settings.heartbeat_seconds)
        if any(job_id in self.held for job_id in ids):
            self._beat_now.set()

    def _request_beat(self, _job_id: str) -> None:
        """ctx.heartbeat(): sync handlers call it from their thread, so hand the wake-up to the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._beat_now.set)

    async def _drain(self) -> None:
        """No new claims; in-flight jobs get the grace period, then the rest are released."""
        running = [a.task for a in self.held.values() if a.task is not None]
        if running:
            log.info("draining %d jobs (grace %g s)", len(running), self.settings.shutdown_grace_seconds)
            await asyncio.wait(running, timeout=self.settings.shutdown_grace_seconds)
        late = list(self.held.values())
        if late:
            log.info("releasing %d jobs still running after the grace period", len(late))
        for attempt in late:
            attempt.released = True
            attempt.ctx.cancel()
            if attempt.task is not None:
                attempt.task.cancel()
        await asyncio.gather(*(a.task for a in late if a.task is not None), return_exceptions=True)
