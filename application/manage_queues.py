"""Queue use cases: the overview of every queue (counts and settings) and runtime changes of its limits."""

from __future__ import annotations

from typing import Any, Final

from attrs import evolve, frozen

from application import reporting
from application.ports import NO_METRICS, Clock, Dispatcher, JobRepository, Metrics, QueueSettingsRepository, QueueStats
from application.submit_jobs import dispatch
from domain.flow import QueueSettings
from domain.job import State

WAKE_BATCH: Final = 10_000  # held jobs dispatched at once by a change; the scheduler's sweep wakes any others


@frozen
class UpdateQueue:
    queues: QueueSettingsRepository
    jobs: JobRepository
    dispatcher: Dispatcher
    clock: Clock
    metrics: Metrics = NO_METRICS

    async def __call__(self, queue: str, changes: dict[str, Any]) -> QueueSettings:
        """Change the given settings of a queue (the others keep their value). Workers apply them within a second;
        held jobs that the change makes room for (a resume, a higher max_running) are dispatched at once."""
        now = self.clock.now()
        settings = (await self.queues.get(queue)).change(now=now, **changes)
        await self.queues.upsert(settings)
        if not settings.paused:
            woken = await self.jobs.wake(now, limit=WAKE_BATCH, queue=queue)
            await dispatch(self.dispatcher, woken)
            reporting.woken(self.metrics, woken, by=reporting.BY_QUEUE_CHANGE)
        return settings


def with_settings(stats: list[QueueStats], settings: list[QueueSettings]) -> list[QueueStats]:
    """Each queue's statistics with its settings; a configured queue without jobs is listed with zero counts."""
    by_queue = {s.queue: s for s in settings}
    merged = [evolve(s, settings=by_queue.get(s.queue)) for s in stats]
    known = {s.queue for s in stats}
    merged += [QueueStats(queue=q, counts={str(state): 0 for state in State}, oldest_queued_at=None,
                          finished_last_minute=0, settings=s) for q, s in by_queue.items() if q not in known]
    return sorted(merged, key=lambda s: s.queue)
