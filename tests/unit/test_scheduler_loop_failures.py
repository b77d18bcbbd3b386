"""SchedulerLoop outlives failing ticks: any error is logged, the loop backs off and tries again."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from attrs import define

from adapters.memory.clock import SystemClock
from adapters.memory.jobs import InMemoryJobRepository
from application.ports import Promoted
from application.scheduler import SchedulerLoop, SchedulerTick
from domain.errors import Unavailable
from domain.job import JobSpec, State
from tests.unit.fakes import Stack


@define
class FailingJobs:
    """The memory repository, except that the next `errors` promotions raise them, one each."""

    jobs: InMemoryJobRepository
    errors: list[Exception]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.jobs, name)

    async def promote_due(self, now: datetime, limit: int) -> list[Promoted]:
        if self.errors:
            raise self.errors.pop(0)
        return await self.jobs.promote_due(now, limit)


async def test_the_loop_logs_backs_off_and_goes_on_after_any_error(caplog: pytest.LogCaptureFixture) -> None:
    stack = Stack(clock=SystemClock())  # type: ignore[arg-type]
    jobs = FailingJobs(stack.jobs, [RuntimeError("a bug"), Unavailable("database gone"), KeyError("x")])
    tick = SchedulerTick(jobs, stack.schedules, stack.dispatcher, stack.clock)  # type: ignore[arg-type]
    loop = SchedulerLoop(tick, jobs, stack.schedules, stack.wakeup, stack.clock, max_backoff=0.01)  # type: ignore[arg-type]
    [done] = await stack.submit()([JobSpec(task="noop", run_at=stack.clock.now() + timedelta(seconds=0.05))],
                                  prefix=None)
    with caplog.at_level(logging.ERROR, logger="gnomon.scheduler"):
        runner = asyncio.create_task(loop.run())
        for _ in range(500):
            if (await stack.jobs.get(done.job.id)).state is State.QUEUED:
                break
            await asyncio.sleep(0.01)
        loop.stop()
        await stack.wakeup.notify()
        await asyncio.wait_for(runner, 5)
    assert (await stack.jobs.get(done.job.id)).state is State.QUEUED
    failures = [r for r in caplog.records if "scheduler tick failed" in r.getMessage()]
    assert len(failures) == 3
    assert failures[0].exc_info is not None and failures[1].exc_info is None  # tracebacks for the unexpected
