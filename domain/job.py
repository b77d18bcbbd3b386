"""The job and its state machine (SPEC §2): every transition is a verb returning a new value or raising."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from attrs import field, fields, frozen

from domain.errors import IllegalTransition, InvalidInput, LeaseLost
from domain.retry import Backoff


class State(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"
    CANCELLED = "cancelled"


NEXT: Final[dict[State, frozenset[State]]] = {
    State.SCHEDULED: frozenset({State.QUEUED, State.CANCELLED}),
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.RETRY, State.CANCELLED}),
    State.RETRY: frozenset({State.QUEUED, State.CANCELLED}),
    State.FAILED: frozenset({State.QUEUED}),  # manual retry
    State.CANCELLED: frozenset({State.QUEUED}),  # manual retry
}
TERMINAL: Final = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
WAITING: Final = frozenset({State.SCHEDULED, State.RETRY})  # due by run_at, promoted by the scheduler


class Hold(StrEnum):
    """Why a queued job is kept out of dispatch (SPEC §6): it waits, without a place in Redis, for a slot."""

    KEY = "key"  # its concurrency key has its limit of jobs dispatched or running
    QUEUE = "queue"  # its queue is paused, or has max_running jobs running


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    LOST = "lost"
    CANCELLED = "cancelled"


QUEUE_NAME: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_ERROR_CHARS: Final = 4000


def must_be_aware(_inst: object, attribute: Any, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must carry a time zone")


def _aware(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError("now must carry a time zone")
    return now


@frozen(kw_only=True)
class Lease:
    """Who runs the job, until when, and the fencing token every write of theirs must carry."""

    worker_id: str
    token: int
    expires_at: datetime = field(validator=must_be_aware)


@frozen(kw_only=True)
class Run:
    """One attempt of a job: a row of execution history."""

    job_id: str
    attempt: int
    worker_id: str
    started_at: datetime
    finished_at: datetime
    outcome: Outcome
    error: str | None = None

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps builds one a call
_SPEC_RULES: Final = (
    ("task", "must be 1 to 200 characters"),
    ("queue", "must be 1 to 64 characters of letters, digits, '_', '.', ':' or '-'"),
    ("priority", "must be between 0 and 9"),
    ("max_attempts", "must be between 1 and 1000"),
    ("timeout_seconds", "must be more than 0 and at most 604800 (7 days)"),
    ("idempotency_key", "must be 1 to 255 characters"),
    ("concurrency_key", "must be 1 to 255 characters"),
    ("concurrency_limit", "must be between 1 and 100000"),
    ("payload", f"must encode to at most {MAX_PAYLOAD_BYTES} bytes of JSON"),
)


@frozen(kw_only=True)
class JobSpec:
    """What a client asks for: checked against the model's rules before any job exists."""

    task: str
    payload: dict[str, Any] = field(factory=dict)
    queue: str = "default"
    priority: int = 0
    run_at: datetime | None = field(default=None, validator=must_be_aware)
    max_attempts: int = 3
    backoff: Backoff = field(factory=Backoff)
    timeout_seconds: float = 300.0
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int = 1

    def problems(self, prefix: str = "") -> dict[str, str]:
        """Every rule this spec breaks, keyed by field path; empty when valid."""
        rules = (
            0 < len(self.task) <= 200,
            QUEUE_NAME.match(self.queue) is not None,
            0 <= self.priority <= 9,
            1 <= self.max_attempts <= 1000,
            0 < self.timeout_seconds <= 7 * 86400,
            self.idempotency_key is None or 0 < len(self.idempotency_key) <= 255,
            self.concurrency_key is None or 0 < len(self.concurrency_key) <= 255,
            1 <= self.concurrency_limit <= 100_000,
            not self.payload or len(_COMPACT.encode(self.payload)) <= MAX_PAYLOAD_BYTES,
        )
        if all(rules):
            return {}
        return {prefix + name: message for (name, message), ok in zip(_SPEC_RULES, rules, strict=True) if not ok}

    def check(self) -> JobSpec:
        if found := self.problems():
            raise InvalidInput(found)
        return self


# Not slotted: a transition copies the instance's __dict__ (~1.5 us) instead of running attrs `evolve`, which
# builds a new instance through __init__ and every field's validator again (~8 us; a fifth of a worker's CPU per
# noop job went to building and copying Jobs).
@frozen(kw_only=True, slots=False)
class Job:
    id: str
    task: str
    payload: dict[str, Any]
    queue: str = "default"
    priority: int = 0
    run_at: datetime = field(validator=must_be_aware)
    state: State = State.SCHEDULED
    attempt: int = 0
    max_attempts: int = 3
    backoff: Backoff = field(factory=Backoff)
    timeout_seconds: float = 300.0
    idempotency_key: str | None = None
    schedule_id: str | None = None
    scheduled_for: datetime | None = None
    concurrency_key: str | None = None
    concurrency_limit: int = 1
    result: Any = None
    last_error: str | None = None
    created_at: datetime = field(validator=must_be_aware)
    updated_at: datetime = field(validator=must_be_aware)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    dispatched_at: datetime | None = None
    held_at: datetime | None = None  # set while held: queued, but not dispatched until a slot frees
    held_for: Hold | None = None
    lease: Lease | None = None
    version: int = 0  # bumps on every transition; the lease token is the version the claim produced

    @classmethod
    def create(cls, job_id: str, spec: JobSpec, *, now: datetime, schedule_id: str | None = None,
               scheduled_for: datetime | None = None) -> Job:
        """A new job: `queued` at once when due now, else `scheduled` for its `run_at`."""
        return cls.create_many([job_id], [spec], now=now, schedule_id=schedule_id, scheduled_for=scheduled_for)[0]

    @classmethod
    def create_many(cls, job_ids: Sequence[str], specs: Sequence[JobSpec], *, now: datetime,
                    schedule_id: str | None = None, scheduled_for: datetime | None = None) -> list[Job]:
        """New jobs, one per id and spec, as `create` makes them. Built without running the validators: the only
        ones a Job has check that instants are aware, which `now` is (checked once) and a spec's run_at was when
        the spec was made (half of a submit's domain time went to running them again, per job)."""
        _aware(now)
        jobs = []
        for job_id, spec in zip(job_ids, specs, strict=True):
            run_at = spec.run_at or now
            due = run_at <= now
            job = object.__new__(cls)
            job.__dict__.update(
                id=job_id, task=spec.task, payload=spec.payload, queue=spec.queue, priority=spec.priority,
                run_at=run_at, state=State.QUEUED if due else State.SCHEDULED, attempt=0,
                max_attempts=spec.max_attempts, backoff=spec.backoff, timeout_seconds=spec.timeout_seconds,
                idempotency_key=spec.idempotency_key, schedule_id=schedule_id, scheduled_for=scheduled_for,
                concurrency_key=spec.concurrency_key, concurrency_limit=spec.concurrency_limit, result=None,
                last_error=None, created_at=now, updated_at=now, started_at=None, finished_at=None,
                dispatched_at=now if due else None, held_at=None, held_for=None, lease=None, version=0,
            )
            jobs.append(job)
        return jobs

    @classmethod
    def stored(cls, **values: Any) -> Job:
        """A job as storage kept it, every field given: validated when it was built, so the validators do not run
        again (reading a batch of claimed rows cost as much as the rest of the claim). Only for values a Job
        produced; anything from outside goes through the constructor."""
        if values.keys() != _JOB_FIELDS:
            raise TypeError(f"Job.stored needs exactly the fields of a Job: {sorted(values.keys() ^ _JOB_FIELDS)}")
        job = object.__new__(cls)
        job.__dict__.update(values)
        return job

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def held(self) -> bool:
        """Queued but kept out of dispatch until its key and its queue have room (SPEC §6)."""
        return self.held_for is not None

    def hold(self, *, now: datetime, reason: Hold) -> Job:
        """A queued job that may not start yet stays queued, out of dispatch, until a slot frees. Not a change of
        state: the version (the CAS and fencing counter) stays, so a hold never makes a cancel stale."""
        if self.state is not State.QUEUED:
            raise IllegalTransition(self.id, self.state, f"held ({reason})")
        return self._with(held_at=_aware(now), held_for=reason)

    def unhold(self, *, now: datetime) -> Job:
        """A held job whose slot freed goes back to dispatch (stamped dispatched now)."""
        if self.state is not State.QUEUED:
            raise IllegalTransition(self.id, self.state, "unheld")
        return self._with(held_at=None, held_for=None, dispatched_at=_aware(now))

    def deadline(self) -> datetime:
        """When the running attempt times out."""
        return (self.started_at or self.updated_at) + timedelta(seconds=self.timeout_seconds)

    def promote(self, *, now: datetime) -> Job:
        """A waiting job whose time has come joins its queue (and is dispatched)."""
        if self.state not in WAITING:  # failed and cancelled jobs go back to a queue only by retry_now
            raise IllegalTransition(self.id, self.state, f"{State.QUEUED} (promote)")
        if self.run_at > now:
            raise IllegalTransition(self.id, self.state, f"{State.QUEUED} before {self.run_at.isoformat()}")
        return self._to(State.QUEUED, now=now, dispatched_at=now)

    def start(self, *, worker_id: str, now: datetime, lease_seconds: float) -> Job:
        """A worker claims the job: one more attempt, under a lease fenced by the new version."""
        token = self.version + 1
        lease = Lease(worker_id=worker_id, token=token, expires_at=now + timedelta(seconds=lease_seconds))
        return self._to(State.RUNNING, now=now, attempt=self.attempt + 1, lease=lease, started_at=now,
                        finished_at=None)

    def renew(self, *, token: int, now: datetime, lease_seconds: float) -> Job:
        """Heartbeat: push the lease out; refused once the lease was lost."""
        lease = self.holder(token, now=now)
        expires_at = now + timedelta(seconds=lease_seconds)
        return self._with(lease=Lease(worker_id=lease.worker_id, token=lease.token, expires_at=expires_at))

    def succeed(self, *, token: int, now: datetime, result: Any = None) -> tuple[Job, Run]:
        run = self._run(self.holder(token, now=now), now, Outcome.SUCCEEDED, None)
        return self._to(State.SUCCEEDED, now=now, result=result, finished_at=now, lease=None), run

    def fail(self, *, token: int, now: datetime, error: str, outcome: Outcome = Outcome.FAILED,
             permanent: bool = False) -> tuple[Job, Run]:
        """An attempt ended badly: retry after backoff while attempts are left, else fail for good."""
        return self._failed(self.holder(token, now=now), now, error, outcome, permanent)

    def lose(self, *, now: datetime) -> tuple[Job, Run]:
        """The lease expired without a word from the worker: the attempt counts as failed ("lost")."""
        if self.state is not State.RUNNING or self.lease is None or self.lease.expires_at > now:
            raise IllegalTransition(self.id, self.state, "lost (lease still valid)")
        return self._failed(self.lease, now, "worker lost: lease expired", Outcome.LOST, False)

    def release(self, *, token: int, now: datetime) -> Job:
        """Give the job back at shutdown without spending the attempt it was given."""
        self.holder(token, now=now)
        return self._to(State.RETRY, now=now, attempt=self.attempt - 1, run_at=now, lease=None,
                        started_at=None)

    def cancel(self, *, now: datetime) -> tuple[Job, Run | None]:
        """Cancel; a running attempt is closed as `cancelled` and its worker's later writes are refused."""
        run = self._run(self.lease, now, Outcome.CANCELLED, "cancelled") if self.lease else None
        return self._to(State.CANCELLED, now=now, finished_at=now, lease=None), run

    def retry_now(self, *, now: datetime) -> Job:
        """Manual retry of a failed or cancelled job; grants one more attempt if none are left."""
        if self.state not in (State.FAILED, State.CANCELLED):  # NEXT also lets waiting jobs reach queued
            raise IllegalTransition(self.id, self.state, f"{State.QUEUED} (manual retry)")
        return self._to(State.QUEUED, now=now, run_at=now, dispatched_at=now, finished_at=None, result=None,
                        max_attempts=max(self.max_attempts, self.attempt + 1))

    def holder(self, token: int, *, now: datetime) -> Lease:
        """The lease if `token` still holds it at `now`; LeaseLost otherwise (the fencing rule)."""
        lease = self.lease
        if self.state is not State.RUNNING or lease is None or lease.token != token or lease.expires_at <= now:
            raise LeaseLost(self.id, token)
        return lease

    def _failed(self, lease: Lease, now: datetime, error: str, outcome: Outcome,
                permanent: bool) -> tuple[Job, Run]:
        error = error[:MAX_ERROR_CHARS]
        run = self._run(lease, now, outcome, error)
        if permanent or self.attempt >= self.max_attempts:
            return self._to(State.FAILED, now=now, last_error=error, finished_at=now, lease=None), run
        run_at = now + self.backoff.delay(self.attempt, seed=self.id)
        return self._to(State.RETRY, now=now, last_error=error, run_at=run_at, lease=None), run

    def _run(self, lease: Lease, now: datetime, outcome: Outcome, error: str | None) -> Run:
        return Run(job_id=self.id, attempt=self.attempt, worker_id=lease.worker_id,
                   started_at=self.started_at or now, finished_at=now, outcome=outcome, error=error)

    def _to(self, state: State, *, now: datetime, **changes: Any) -> Job:
        if state not in NEXT.get(self.state, ()):
            raise IllegalTransition(self.id, self.state, state)
        # Any change of state ends a hold: only a queued job can be held.
        return self._with(state=state, version=self.version + 1, updated_at=_aware(now), held_at=None,
                          held_for=None, **changes)

    def _with(self, **changes: Any) -> Job:
        """A copy with `changes`, which the calling verb makes valid (its instants derive from an aware `now`),
        so no validator runs again."""
        job = object.__new__(type(self))
        values = job.__dict__
        values.update(self.__dict__)
        values.update(changes)
        return job


_JOB_FIELDS: Final = frozenset(f.name for f in fields(Job))
