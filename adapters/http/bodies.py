"""Request bodies, and their conversion to domain values (JobSpec, ScheduleSpec, Backoff).

Bodies are msgspec Structs with `forbid_unknown_fields=True` rather than the attrs classes STYLE.md shows:
Litestar decodes and documents Structs natively, and msgspec's strict decoder (decoding.py) names the exact
field of every unknown key or wrong type ("jobs[3].priority"), which attrs classes would need a hand-written
checker to match. The shape (types, time zones, sane sizes) is checked here; the rules of the model (priority
0-9, cron syntax, ...) stay in the domain, which reports them as InvalidInput.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from domain.errors import InvalidInput
from domain.flow import MAX_PER_SECOND, MAX_RUNNING
from domain.job import JobSpec
from domain.retry import Backoff
from domain.schedule import MisfirePolicy, OverlapPolicy, ScheduleSpec

MAX_SECONDS: Final = 366 * 86400
MAX_DELAY_SECONDS: Final = 10 * MAX_SECONDS
# Instants outside these years are refused: near year 9999 the arithmetic of a schedule (an interval times a
# thousand previews, a cron's next year) overflows datetime.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(3000, 1, 1, tzinfo=UTC)
Int = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]  # what a PostgreSQL integer column holds
Text = Annotated[str, Meta(max_length=1000)]  # a bound for error messages; the domain has the real rule
Aware = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a zone offset or Z")]
Payload = dict[str, Any]


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class BackoffBody(Body):
    base_seconds: Annotated[float, Meta(ge=0, le=MAX_SECONDS)] = 1.0
    factor: Annotated[float, Meta(ge=1, le=1000)] = 2.0
    max_seconds: Annotated[float, Meta(ge=0, le=MAX_SECONDS)] = 3600.0
    jitter: bool = True

    def to_domain(self) -> Backoff:
        return Backoff(base_seconds=self.base_seconds, factor=self.factor, max_seconds=self.max_seconds,
                       jitter=self.jitter)


DEFAULT_BACKOFF: Final = BackoffBody().to_domain()  # built once: Backoff is frozen, and most jobs take the default


def _backoff(body: BackoffBody | None) -> Backoff:
    return DEFAULT_BACKOFF if body is None else body.to_domain()


class JobBody(Body):
    task: Text
    payload: Payload = msgspec.field(default_factory=dict)
    queue: Text = "default"
    priority: Int = 0
    run_at: Aware | None = None
    delay_seconds: Annotated[float, Meta(ge=0, le=MAX_DELAY_SECONDS)] | None = None
    max_attempts: Int = 3
    backoff: BackoffBody | None = None
    timeout_seconds: float = 300.0
    idempotency_key: Text | None = None
    concurrency_key: Text | None = None
    concurrency_limit: Int = 1

    def to_spec(self, now: datetime, where: str = "") -> JobSpec:
        if self.run_at is not None and self.delay_seconds is not None:
            raise InvalidInput({f"{where}delay_seconds": "give run_at or delay_seconds, not both"})
        run_at = utc(self.run_at, f"{where}run_at")
        if self.delay_seconds is not None:
            run_at = now + timedelta(seconds=self.delay_seconds)
        return JobSpec(task=self.task, payload=self.payload, queue=self.queue, priority=self.priority,
                       run_at=run_at, max_attempts=self.max_attempts,
                       backoff=_backoff(self.backoff), timeout_seconds=self.timeout_seconds,
                       idempotency_key=self.idempotency_key, concurrency_key=self.concurrency_key,
                       concurrency_limit=self.concurrency_limit)


class BatchBody(Body):
    jobs: list[JobBody]

    def to_specs(self, now: datetime) -> list[JobSpec]:
        specs, problems = [], {}
        for i, job in enumerate(self.jobs):
            try:
                specs.append(job.to_spec(now))
            except InvalidInput as exc:  # the field paths are only written out for a job that has a problem
                problems |= {f"jobs[{i}].{name}": message for name, message in exc.errors.items()}
        if problems:
            raise InvalidInput(problems)
        return specs


class JobTemplateBody(Body):
    """The job a schedule fires: a job without run_at, delay or idempotency key."""

    task: Text
    payload: Payload = msgspec.field(default_factory=dict)
    queue: Text = "default"
    priority: Int = 0
    max_attempts: Int = 3
    backoff: BackoffBody | None = None
    timeout_seconds: float = 300.0
    concurrency_key: Text | None = None
    concurrency_limit: Int = 1

    def to_spec(self) -> JobSpec:
        fields = msgspec.structs.asdict(self)
        return JobSpec(**fields | {"backoff": _backoff(self.backoff)})


class ScheduleBody(Body):
    name: Text
    job: JobTemplateBody
    cron: Text | None = None
    interval_seconds: Int | None = None
    timezone: Text = "UTC"
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace_seconds: Int = 60
    max_catchup: Int = 100
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    jitter_seconds: Int = 0
    start_at: Aware | None = None
    end_at: Aware | None = None
    max_runs: Int | None = None

    def to_spec(self) -> ScheduleSpec:
        fields = msgspec.structs.asdict(self)
        return ScheduleSpec(**fields | {"job": self.job.to_spec(), "start_at": utc(self.start_at, "start_at"),
                                        "end_at": utc(self.end_at, "end_at")})


class JobTemplatePatch(Body):
    task: Text | UnsetType = UNSET
    payload: Payload | UnsetType = UNSET
    queue: Text | UnsetType = UNSET
    priority: Int | UnsetType = UNSET
    max_attempts: Int | UnsetType = UNSET
    backoff: BackoffBody | UnsetType = UNSET
    timeout_seconds: float | UnsetType = UNSET
    concurrency_key: Text | UnsetType | None = UNSET
    concurrency_limit: Int | UnsetType = UNSET

    def changes(self) -> dict[str, Any]:
        found = _given(self)
        if isinstance(self.backoff, BackoffBody):
            found["backoff"] = self.backoff.to_domain()
        return found


class SchedulePatch(Body):
    """Any field of a schedule; absent fields keep their value, `job` merges into the template."""

    name: Text | UnsetType = UNSET
    job: JobTemplatePatch | UnsetType = UNSET
    cron: Text | UnsetType | None = UNSET
    interval_seconds: Int | UnsetType | None = UNSET
    timezone: Text | UnsetType = UNSET
    misfire_policy: MisfirePolicy | UnsetType = UNSET
    misfire_grace_seconds: Int | UnsetType = UNSET
    max_catchup: Int | UnsetType = UNSET
    overlap_policy: OverlapPolicy | UnsetType = UNSET
    jitter_seconds: Int | UnsetType = UNSET
    start_at: Aware | UnsetType | None = UNSET
    end_at: Aware | UnsetType | None = UNSET
    max_runs: Int | UnsetType | None = UNSET

    def changes(self) -> dict[str, Any]:
        found = _given(self)
        if isinstance(self.job, JobTemplatePatch):
            found["job"] = self.job.changes()
        for name in ("start_at", "end_at"):
            if name in found:
                found[name] = utc(found[name], name)
        return found


class QueuePatch(Body):
    """The runtime limits of a queue (SPEC §6): absent fields keep their value, null removes a limit."""

    max_running: Annotated[int, Meta(ge=1, le=MAX_RUNNING)] | UnsetType | None = UNSET
    max_per_second: Annotated[float, Meta(gt=0, le=MAX_PER_SECOND)] | UnsetType | None = UNSET
    paused: bool | UnsetType = UNSET

    def changes(self) -> dict[str, Any]:
        return _given(self)


class PauseBody(Body):
    note: Text | None = None
    until: Aware | None = None


class BackfillBody(Body):
    start: Aware
    end: Aware


def _given(body: Body) -> dict[str, Any]:
    return {name: value for name in body.__struct_fields__ if (value := getattr(body, name)) is not UNSET}


def utc(value: datetime | None, field: str) -> datetime | None:
    return None if value is None else instant(value, field)


def instant(value: datetime, field: str) -> datetime:
    """The instant in UTC, within the years a scheduler has any business with."""
    try:
        found = value.astimezone(UTC)
    except OverflowError:
        found = None
    if found is None or not EARLIEST <= found < LATEST:
        raise InvalidInput({field: f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)"})
    return found
