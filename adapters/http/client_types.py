"""What the API's JSON looks like to a client (SPEC §4): TypedDicts of the requests and answers.

Timestamps in answers are RFC 3339 strings in UTC (`...Z`); requests take aware datetimes or such strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, Required, TypedDict, TypeVar

T = TypeVar("T")
Instant = datetime | str  # an aware datetime, or RFC 3339 text


class Backoff(TypedDict, total=False):
    base_seconds: float
    factor: float
    max_seconds: float
    jitter: bool


class JobOptions(TypedDict, total=False):
    queue: str
    priority: int
    run_at: Instant
    delay_seconds: float
    max_attempts: int
    backoff: Backoff
    timeout_seconds: float
    idempotency_key: str
    concurrency_key: str
    concurrency_limit: int


class JobRequest(JobOptions, total=False):
    task: Required[str]
    payload: dict[str, Any]


class Lease(TypedDict):
    worker_id: str
    expires_at: str


class Held(TypedDict):
    """Why a queued job is held back by flow control (SPEC §6), and since when."""

    reason: Literal["concurrency_key", "queue"]
    since: str


class JobInfo(TypedDict):
    id: str
    task: str
    payload: dict[str, Any]
    queue: str
    priority: int
    run_at: str
    state: str
    attempt: int
    max_attempts: int
    backoff: Backoff
    timeout_seconds: float
    idempotency_key: str | None
    schedule_id: str | None
    scheduled_for: str | None
    concurrency_key: str | None
    concurrency_limit: int
    result: Any
    last_error: str | None
    lease: Lease | None
    held: Held | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None


class RunInfo(TypedDict):
    job_id: str
    attempt: int
    worker_id: str
    started_at: str
    finished_at: str
    duration_seconds: float
    outcome: str
    error: str | None


class JobTemplate(TypedDict, total=False):
    task: Required[str]
    payload: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    backoff: Backoff
    timeout_seconds: float
    concurrency_key: str
    concurrency_limit: int


class ScheduleOptions(TypedDict, total=False):
    cron: str
    interval_seconds: int
    timezone: str
    misfire_policy: Literal["skip", "run_once", "run_all"]
    misfire_grace_seconds: int
    max_catchup: int
    overlap_policy: Literal["allow", "skip", "buffer_one", "cancel_other"]
    jitter_seconds: int
    start_at: Instant
    end_at: Instant
    max_runs: int


class ScheduleInfo(TypedDict):
    id: str
    name: str
    cron: str | None
    interval_seconds: int | None
    timezone: str
    job: JobTemplate
    misfire_policy: str
    misfire_grace_seconds: int
    max_catchup: int
    overlap_policy: str
    jitter_seconds: int
    start_at: str | None
    end_at: str | None
    max_runs: int | None
    paused: bool
    pause_note: str | None
    paused_at: str | None
    paused_until: str | None
    next_fire_at: str | None
    next_fire_at_local: str | None
    last_fired_at: str | None
    last_job_id: str | None
    fired_count: int
    buffered_for: str | None
    created_at: str
    updated_at: str


class FireTime(TypedDict):
    utc: str
    local: str


class OccurrenceInfo(TypedDict):
    scheduled_for: str
    fate: str
    job_id: str | None
    count: int | None
    until: str | None
    recorded_at: str


class QueueInfo(TypedDict):
    queue: str
    counts: dict[str, int]
    oldest_queued_at: str | None
    oldest_queued_age_seconds: float | None
    finished_last_minute: int
    held: dict[str, int]  # by reason: concurrency_key, queue (part of counts["queued"])
    max_running: int | None
    max_per_second: float | None
    paused: bool


class Page(TypedDict, Generic[T]):
    items: list[T]
    next_cursor: str | None


class Health(TypedDict, total=False):
    status: Required[str]
    checks: dict[str, bool]


class Problem(TypedDict, total=False):
    """An RFC 9457 problem, as the API answers every error; `errors` lists the fields of a 422."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, str]]


class JobFilters(TypedDict, total=False):
    state: Literal["scheduled", "queued", "running", "succeeded", "failed", "retry", "cancelled"]
    queue: str
    task: str
    schedule_id: str
    limit: int
    cursor: str
