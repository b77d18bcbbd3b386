"""The worker: claim batches, run handlers under a lease with a timeout, record outcomes in batches,
heartbeat, react to cancellation, drain on shutdown. At-least-once: a worker that dies mid-job leaves a
lease that expires, and the scheduler retries the job."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from attrs import define, field, frozen

from application import reporting
from application.ports import NO_METRICS, Clock, Dispatcher, Finished, JobRepository, Metrics, TaskRegistry
from application.task_context import JobContext
from domain.errors import DomainError, LeaseLost, PermanentFailure, Unavailable
from domain.job import Job, Outcome

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


@define
class _Held:
    job: Job
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    lost: bool = False
    released: bool = False


@define
class Worker:
    jobs: JobRepository
    dispatcher: Dispatcher
    tasks: TaskRegistry
    clock: Clock
    settings: WorkerSettings
    metrics: Metrics = NO_METRICS
    held: dict[str, _Held] = field(factory=dict)
    outbox: list[Finished] = field(factory=list)
    executed: int = 0
    _stopping: asyncio.Event = field(factory=asyncio.Event)
    _slot_freed: asyncio.Event = field(factory=asyncio.Event)
    _outbox_ready: asyncio.Event = field(factory=asyncio.Event)
    _beat_now: asyncio.Event = field(factory=asyncio.Event)
    _threads: ThreadPoolExecutor | None = None

    async def run(self) -> None:
        """Work until stop() is called, then drain and return."""
        self._threads = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="gnomon-task")
        loop = asyncio.get_running_loop()
        helpers = [asyncio.create_task(self._flusher()), asyncio.create_task(self._heartbeats(loop))]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._flush()
            self._threads.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        self._stopping.set()
        self._slot_freed.set()

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self.held)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                await self._claim(free)
            except (Unavailable, DomainError) as exc:
                log.error("claim failed, retrying in 1 s: %s", exc)
                await _sleep_unless(self._stopping, 1.0)

    async def _claim(self, free: int) -> None:
        ids = await self.dispatcher.pop(self.settings.queues, limit=free, timeout=self.settings.pop_timeout)
        if not ids:
            return
        if self._stopping.is_set():
            return  # popped during shutdown: left queued in the database, re-dispatched after the timeout
        claimed = await self.jobs.claim(ids, worker_id=self.settings.worker_id, now=self.clock.now(),
                                        lease_seconds=self.settings.lease_seconds)
        reporting.claimed(self.metrics, claimed)
        for job in claimed:
            held = _Held(job=job, ctx=JobContext.of(job, self._request_beat))
            self.held[job.id] = held
            held.task = asyncio.create_task(self._execute(held))

    async def _execute(self, held: _Held) -> None:
        job = held.job
        try:
            outcome = await self._attempt(held)
        finally:
            self.held.pop(job.id, None)
            self._slot_freed.set()
        if outcome is not None:
            self.executed += 1
            self.outbox.append(outcome)
            self._outbox_ready.set()

    async def _attempt(self, held: _Held) -> Finished | None:
        try:
            return await self._outcome(held)
        except LeaseLost:
            log.warning("job %s: lease lost before its outcome could be recorded", held.job.id)
            return None

    async def _outcome(self, held: _Held) -> Finished | None:
        job, token = held.job, held.job.version
        handler = self.tasks.handler(job.task)
        try:
            if handler is None:
                raise PermanentFailure(f"task {job.task!r} is not registered on worker {self.settings.worker_id}")
            call = self._call(handler, job.payload, held.ctx)
            result = await asyncio.wait_for(call, timeout=job.timeout_seconds)
            json.dumps(result)
        except asyncio.CancelledError:
            held.ctx.cancel()
            if held.released:
                return Finished(job=job.release(token=token, now=self.clock.now()), run=None)
            if held.lost:
                return None  # cancelled or rescued elsewhere: whatever we wrote now would be refused
            raise
        except TimeoutError:
            held.ctx.cancel()
            new, run = job.fail(token=token, now=self.clock.now(), outcome=Outcome.TIMEOUT,
                                error=f"timed out after {job.timeout_seconds:g} s")
            return Finished(job=new, run=run)
        except PermanentFailure as exc:
            new, run = job.fail(token=token, now=self.clock.now(), error=_describe(exc), permanent=True)
            return Finished(job=new, run=run)
        except Exception as exc:  # a handler may raise anything: that is its way of failing
            new, run = job.fail(token=token, now=self.clock.now(), error=_describe(exc))
            return Finished(job=new, run=run)
        new, run = job.succeed(token=token, now=self.clock.now(), result=result)
        return Finished(job=new, run=run)

    def _call(self, handler: Any, payload: dict[str, Any], ctx: JobContext) -> Awaitable[Any]:
        if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__):
            return handler(payload, ctx)
        loop = asyncio.get_running_loop()
        return _settle(loop.run_in_executor(self._threads, handler, payload, ctx))

    async def _flusher(self) -> None:
        while True:
            await self._outbox_ready.wait()
            await asyncio.sleep(self.settings.flush_window)
            await self._flush()

    async def _flush(self) -> None:
        self._outbox_ready.clear()
        while self.outbox:
            batch, self.outbox = self.outbox, []
            try:
                refused = await self.jobs.finish(batch, now=self.clock.now())
            except (Unavailable, DomainError) as exc:
                log.error("recording %d outcomes failed, retrying: %s", len(batch), exc)
                self.outbox = batch + self.outbox
                await asyncio.sleep(0.5)
                continue
            lost = set(refused)
            reporting.finished(self.metrics, [f for f in batch if f.job.id not in lost])
            for job_id in refused:
                log.warning("outcome of job %s refused: its lease was lost (fenced)", job_id)

    async def _heartbeats(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), timeout=self.settings.heartbeat_seconds)
            self._beat_now.clear()
            try:
                await self._renew()
            except (Unavailable, DomainError) as exc:
                log.error("heartbeat failed: %s", exc)

    async def _renew(self) -> None:
        leases = [(h.job.id, h.job.version) for h in self.held.values()]
        if not leases:
            return
        now, seconds = self.clock.now(), self.settings.lease_seconds
        lost = await self.jobs.renew(leases, now=now, lease_seconds=seconds)
        for job_id, token in leases:
            held = self.held.get(job_id)
            if held is not None and job_id not in lost:
                with contextlib.suppress(LeaseLost):  # our own view of the lease moves with the stored one
                    held.job = held.job.renew(token=token, now=now, lease_seconds=seconds)
        for job_id in lost:
            held = self.held.get(job_id)
            if held is not None and held.task is not None:
                log.info("job %s was cancelled or its lease lost: stopping its handler", job_id)
                held.lost = True
                held.ctx.cancel()
                held.task.cancel()

    def _request_beat(self, _job_id: str) -> None:
        self._beat_now.set()

    async def _drain(self) -> None:
        """No new claims; in-flight jobs get the grace period, then the rest are released."""
        running = [h.task for h in self.held.values() if h.task is not None]
        if running:
            log.info("draining %d jobs (grace %g s)", len(running), self.settings.shutdown_grace_seconds)
            await asyncio.wait(running, timeout=self.settings.shutdown_grace_seconds)
        late = list(self.held.values())
        for held in late:
            held.released = True
            held.ctx.cancel()
            if held.task is not None:
                held.task.cancel()
        await asyncio.gather(*(h.task for h in late if h.task is not None), return_exceptions=True)


async def _settle(future: Awaitable[Any]) -> Any:
    result = await future
    if inspect.isawaitable(result):
        result = await result
    return result


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
