"""Response bodies. Every timestamp is converted to UTC here, so msgspec writes it as RFC 3339 with `Z`.

Views are msgspec Structs for the same reason as the bodies (bodies.py): Litestar encodes and documents them
natively. A handler never returns a domain value; it returns `XView.of(value)`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from application.ports import QueueStats
from application.reporting import HeldReason, held_reason
from domain.flow import QueueSettings
from domain.job import Hold, Job, Run
from domain.retry import Backoff
from domain.schedule import Occurrence, Schedule


def z(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


class View(msgspec.Struct, kw_only=True):
    pass


class BackoffView(View):
    base_seconds: float
    factor: float
    max_seconds: float
    jitter: bool

    @classmethod
    def of(cls, backoff: Backoff) -> BackoffView:
        return cls(base_seconds=backoff.base_seconds, factor=backoff.factor, max_seconds=backoff.max_seconds,
                   jitter=backoff.jitter)


class LeaseView(View):
    worker_id: str
    expires_at: datetime


class HeldView(View):
    """Why a queued job is not dispatched yet (flow control, SPEC §6), and since when."""

    reason: HeldReason  # concurrency_key: its key has its limit in flight; queue: its queue is paused or at max_running
    since: datetime

    @classmethod
    def of(cls, job: Job) -> HeldView | None:
        if job.held_for is None or job.held_at is None:
            return None
        return cls(reason=held_reason(job.held_for), since=job.held_at.astimezone(UTC))


class JobView(View):
    id: str
    task: str
    payload: dict[str, Any]
    queue: str
    priority: int
    run_at: datetime
    state: str
    attempt: int
    max_attempts: int
    backoff: BackoffView
    timeout_seconds: float
    idempotency_key: str | None
    schedule_id: str | None
    scheduled_for: datetime | None
    concurrency_key: str | None
    concurrency_limit: int
    result: Any
    last_error: str | None
    lease: LeaseView | None
    held: HeldView | None  # set while the job is queued but held back by flow control; null otherwise
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        lease = job.lease
        return cls(
            id=job.id, task=job.task, payload=job.payload, queue=job.queue, priority=job.priority,
            run_at=job.run_at.astimezone(UTC), state=str(job.state), attempt=job.attempt,
            max_attempts=job.max_attempts, backoff=BackoffView.of(job.backoff), timeout_seconds=job.timeout_seconds,
            idempotency_key=job.idempotency_key, schedule_id=job.schedule_id, scheduled_for=z(job.scheduled_for),
            concurrency_key=job.concurrency_key, concurrency_limit=job.concurrency_limit, result=job.result,
            last_error=job.last_error, created_at=job.created_at.astimezone(UTC),
            updated_at=job.updated_at.astimezone(UTC), started_at=z(job.started_at), finished_at=z(job.finished_at),
            lease=None if lease is None else LeaseView(worker_id=lease.worker_id,
                                                       expires_at=lease.expires_at.astimezone(UTC)),
            held=HeldView.of(job),
        )


class JobPage(View):
    items: list[JobView]
    next_cursor: str | None


class JobIds(View):
    ids: list[str]


class RunView(View):
    job_id: str
    attempt: int
    worker_id: str
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    outcome: str
    error: str | None

    @classmethod
    def of(cls, run: Run) -> RunView:
        return cls(job_id=run.job_id, attempt=run.attempt, worker_id=run.worker_id,
                   started_at=run.started_at.astimezone(UTC), finished_at=run.finished_at.astimezone(UTC),
                   duration_seconds=run.duration_seconds, outcome=str(run.outcome), error=run.error)


class JobTemplateView(View):
    task: str
    payload: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    backoff: BackoffView
    timeout_seconds: float
    concurrency_key: str | None
    concurrency_limit: int


class ScheduleView(View):
    id: str
    name: str
    cron: str | None
    interval_seconds: int | None
    timezone: str
    job: JobTemplateView
    misfire_policy: str
    misfire_grace_seconds: int
    max_catchup: int
    overlap_policy: str
    jitter_seconds: int
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    paused: bool
    pause_note: str | None
    paused_at: datetime | None
    paused_until: datetime | None
    next_fire_at: datetime | None
    next_fire_at_local: datetime | None  # the same instant on the wall clock of the schedule's zone
    last_fired_at: datetime | None
    last_job_id: str | None
    fired_count: int
    buffered_for: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleView:
        spec, job = schedule.spec, schedule.spec.job
        template = JobTemplateView(
            task=job.task, payload=job.payload, queue=job.queue, priority=job.priority,
            max_attempts=job.max_attempts, backoff=BackoffView.of(job.backoff), timeout_seconds=job.timeout_seconds,
            concurrency_key=job.concurrency_key, concurrency_limit=job.concurrency_limit)
        nxt = schedule.next_fire_at
        return cls(
            id=schedule.id, name=spec.name, cron=spec.cron, interval_seconds=spec.interval_seconds,
            timezone=spec.timezone, job=template, misfire_policy=str(spec.misfire_policy),
            misfire_grace_seconds=spec.misfire_grace_seconds, max_catchup=spec.max_catchup,
            overlap_policy=str(spec.overlap_policy), jitter_seconds=spec.jitter_seconds, start_at=z(spec.start_at),
            end_at=z(spec.end_at), max_runs=spec.max_runs, paused=schedule.paused, pause_note=schedule.pause_note,
            paused_at=z(schedule.paused_at), paused_until=z(schedule.paused_until), next_fire_at=z(nxt),
            next_fire_at_local=None if nxt is None else nxt.astimezone(schedule.tz),
            last_fired_at=z(schedule.last_fired_at), last_job_id=schedule.last_job_id,
            fired_count=schedule.fired_count, buffered_for=z(schedule.buffered_for),
            created_at=schedule.created_at.astimezone(UTC), updated_at=schedule.updated_at.astimezone(UTC),
        )


class SchedulePage(View):
    items: list[ScheduleView]
    next_cursor: str | None


class FireTime(View):
    utc: datetime
    local: datetime  # in the schedule's zone, with its offset


class OccurrenceView(View):
    scheduled_for: datetime
    fate: str
    job_id: str | None
    count: int | None  # consecutive occurrences this entry stands for; null: more than could be counted
    until: datetime | None  # the last of them, when count is not 1
    recorded_at: datetime

    @classmethod
    def of(cls, entry: Occurrence) -> OccurrenceView:
        return cls(scheduled_for=entry.scheduled_for.astimezone(UTC), fate=str(entry.fate), job_id=entry.job_id,
                   count=entry.count, until=z(entry.until), recorded_at=entry.recorded_at.astimezone(UTC))


class OccurrencePage(View):
    items: list[OccurrenceView]
    next_cursor: str | None


class QueueView(View):
    queue: str
    counts: dict[str, int]
    oldest_queued_at: datetime | None
    oldest_queued_age_seconds: float | None
    finished_last_minute: int
    held: dict[str, int]  # queued jobs held back, by reason (concurrency_key, queue); part of counts["queued"]
    max_running: int | None  # the queue's runtime limits (PATCH /v1/queues/{name}); null: none
    max_per_second: float | None
    paused: bool

    @classmethod
    def of(cls, stats: QueueStats, now: datetime) -> QueueView:
        oldest = stats.oldest_queued_at
        age = None if oldest is None else max((now - oldest).total_seconds(), 0.0)
        settings = stats.settings or QueueSettings(queue=stats.queue)
        return cls(queue=stats.queue, counts=stats.counts, oldest_queued_at=z(oldest),
                   oldest_queued_age_seconds=age, finished_last_minute=stats.finished_last_minute,
                   held=held_counts(stats), max_running=settings.max_running, max_per_second=settings.max_per_second,
                   paused=settings.paused)


def held_counts(stats: QueueStats) -> dict[str, int]:
    """Held jobs of a queue by reason, every reason present (0 when none)."""
    return {held_reason(reason): stats.held.get(reason, 0) for reason in Hold}


class QueueSettingsView(View):
    queue: str
    max_running: int | None
    max_per_second: float | None
    paused: bool
    updated_at: datetime | None

    @classmethod
    def of(cls, settings: QueueSettings) -> QueueSettingsView:
        return cls(queue=settings.queue, max_running=settings.max_running, max_per_second=settings.max_per_second,
                   paused=settings.paused, updated_at=z(settings.updated_at))


class QueueList(View):
    items: list[QueueView]
