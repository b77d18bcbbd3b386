"""One attempt of a job on a worker: call its handler (async on the loop, sync in the thread pool) under its
timeout, and turn what happened into the outcome to record. The worker (application/worker.py) owns the
lease, the heartbeats and the batches; this module only runs and judges."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable
from concurrent.futures import Executor
from typing import Any

from attrs import define

from application.ports import Clock, Finished, TaskRegistry
from application.task_context import JobContext
from domain.errors import LeaseLost, PermanentFailure
from domain.job import Job, Outcome

log = logging.getLogger("gnomon.worker")


class UnstorableResult(Exception):
    """The handler returned something PostgreSQL cannot store as JSON (NaN, infinity, NUL characters...)."""


@define(eq=False)
class Attempt:
    """A claimed job in this worker: its latest lease (moved by heartbeats), its ctx and its task."""

    job: Job
    ctx: JobContext
    task: asyncio.Task[Finished | None] | None = None
    lost: bool = False  # cancelled, or its lease lost: whatever it would write is refused
    released: bool = False  # given back at the end of a drain
    timed_out: bool = False  # its timeout cancelled it: the attempt ends as `timeout`
    timer: Timer | None = None


@define(eq=False)
class Timer:
    """The timeout of the attempts of one claim that share a timeout: one timer of the loop for all of them (an
    `asyncio.timeout` per job cost a tenth of a noop job), cancelled when the last of them ends."""

    running: set[Attempt]
    handle: asyncio.TimerHandle | None = None

    def expire(self) -> None:
        for attempt in self.running:
            if attempt.task is not None:
                attempt.timed_out = True
                attempt.ctx.cancel()
                attempt.task.cancel()

    def ended(self, attempt: Attempt) -> None:
        self.running.discard(attempt)
        if not self.running and self.handle is not None:
            self.handle.cancel()


def arm_timeouts(attempts: list[Attempt], loop: asyncio.AbstractEventLoop) -> None:
    """Start the timeouts of attempts whose tasks were just created: each fires `timeout_seconds` from now, after
    the tasks' first steps (the loop runs callbacks already queued before timers that come due)."""
    groups: dict[float, Timer] = {}
    for attempt in attempts:
        timer = groups.get(attempt.job.timeout_seconds)
        if timer is None:
            timer = groups[attempt.job.timeout_seconds] = Timer(set())
        timer.running.add(attempt)
        attempt.timer = timer
    now = loop.time()
    for seconds, timer in groups.items():
        timer.handle = loop.call_at(now + seconds, timer.expire)


@define
class Runner:
    tasks: TaskRegistry
    clock: Clock
    threads: Executor
    worker_id: str

    async def outcome(self, attempt: Attempt) -> Finished | None:
        """What to record for the attempt; None when nothing may be recorded (its lease is gone). Its timeout is
        the worker's (arm_timeouts): it cancels the task and marks the attempt `timed_out`."""
        job = attempt.job
        try:
            handler = self.tasks.handler(job.task)
            try:
                if handler is None:
                    raise PermanentFailure(f"task {job.task!r} is not registered on worker {self.worker_id}")
                result = await self._call(handler, job.payload, attempt.ctx)
                check_storable(result)
            except asyncio.CancelledError:
                attempt.ctx.cancel()
                if attempt.released:
                    return self._released(attempt)
                if attempt.lost:
                    return None  # cancelled or rescued elsewhere: whatever we wrote now would be refused
                if attempt.timed_out:
                    return self._failed(attempt, f"timed out after {job.timeout_seconds:g} s", Outcome.TIMEOUT)
                raise
            except (PermanentFailure, UnstorableResult) as exc:  # a retry would end the same way
                return self._failed(attempt, describe(exc), permanent=True)
            except Exception as exc:  # a handler may raise anything: that is its way of failing
                return self._failed(attempt, describe(exc))
            # The lease as the heartbeats left it, not as claimed: a job may outlive its first lease many times.
            job = attempt.job
            new, run = job.succeed(token=job.version, now=self.clock.now(), result=result)
            return Finished(job=new, run=run)
        except LeaseLost:
            log.warning("job %s: lease lost before its outcome could be recorded", attempt.job.id)
            return None

    def _call(self, handler: Any, payload: dict[str, Any], ctx: JobContext) -> Awaitable[Any]:
        if _is_async(handler):
            return handler(payload, ctx)
        # A thread that outlives its timeout or a drain keeps running (threads cannot be stopped); it sees
        # ctx.cancelled, and a call still waiting for a thread is cancelled with its asyncio future.
        loop = asyncio.get_running_loop()
        return _settle(loop.run_in_executor(self.threads, handler, payload, ctx))

    def _failed(self, attempt: Attempt, error: str, outcome: Outcome = Outcome.FAILED,
                permanent: bool = False) -> Finished:
        job = attempt.job
        new, run = job.fail(token=job.version, now=self.clock.now(), error=error, outcome=outcome,
                            permanent=permanent)
        return Finished(job=new, run=run)

    def _released(self, attempt: Attempt) -> Finished:
        return Finished(job=attempt.job.release(token=attempt.job.version, now=self.clock.now()), run=None)


_ASYNC: dict[Any, bool] = {}  # handler -> async or not: asked once per handler, not once per job


def _is_async(handler: Any) -> bool:
    try:
        return _ASYNC[handler]
    except (KeyError, TypeError):  # TypeError: an unhashable callable, asked every time
        found = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__)
        with contextlib.suppress(TypeError):
            if len(_ASYNC) < 1024:
                _ASYNC[handler] = found
        return found


async def _settle(future: Awaitable[Any]) -> Any:
    result = await future
    if inspect.isawaitable(result):
        result = await result
    return result


def check_storable(result: Any) -> None:
    """UnstorableResult unless `result` is JSON that PostgreSQL's jsonb accepts."""
    if result is None or result is True or result is False:
        return  # what most handlers return: nothing to encode
    try:
        encoded = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UnstorableResult(f"the handler returned a value that is not JSON: {exc}") from exc
    if "\\u0000" in encoded and _has_nul(result):
        raise UnstorableResult("the handler returned text with NUL characters, which PostgreSQL cannot store")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def describe(exc: BaseException) -> str:
    """The error text of a run: the exception's type and message, NUL characters escaped (PostgreSQL text
    cannot hold them)."""
    text = str(exc)
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return described.replace("\x00", "\\x00")
