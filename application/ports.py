"""Ports: what the use cases need from the world, as Protocols. Adapters satisfy them without inheriting.

Hot paths take and return batches (claim, promote, finish, dispatch) so that one SQL statement or one Redis
pipeline serves many jobs. Every method that changes state is atomic on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Generic, Protocol, TypeVar

from attrs import field, frozen

from domain.flow import QueueSettings
from domain.job import Hold, Job, Run, State
from domain.schedule import Firing, Occurrence, Schedule


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, UTC-aware."""
        ...


T = TypeVar("T")


@frozen(kw_only=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@frozen(kw_only=True)
class JobFilter:
    state: State | None = None
    queue: str | None = None
    task: str | None = None
    schedule_id: str | None = None


@frozen(kw_only=True)
class Submitted:
    job: Job
    created: bool  # False: an existing job with the same idempotency key was returned


@frozen(kw_only=True)
class Finished:
    """The new state of a job after an attempt ended, plus the run row that records the attempt."""

    job: Job
    run: Run | None


@frozen(kw_only=True)
class Recorded:
    """What a write of ended attempts did: the ids it refused, and the held jobs whose slot it freed. Those are
    stamped dispatched and no longer held: the caller pushes them to the dispatcher (or the sweep will)."""

    refused: list[str]
    woken: list[Job]


@frozen(kw_only=True)
class Promoted:
    """A job that a promotion made queued: what dispatching it takes, not the whole job (a tick promotes thousands,
    and reading full rows cost more than the promotion itself)."""

    id: str
    queue: str
    priority: int
    held: bool = False  # flow control held it (its key is full): it is dispatched when woken

    @classmethod
    def of(cls, job: Job) -> Promoted:
        return cls(id=job.id, queue=job.queue, priority=job.priority, held=job.held)


class Dispatchable(Protocol):
    """What dispatching a job takes: a Job has it, and so has a Promoted."""

    @property
    def id(self) -> str: ...

    @property
    def queue(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def held(self) -> bool: ...


IN_FLIGHT: Final = (State.QUEUED, State.RUNNING)  # the states queue_stats(totals=False) counts


@frozen(kw_only=True)
class QueueStats:
    queue: str
    counts: dict[str, int]  # by state
    oldest_queued_at: datetime | None
    finished_last_minute: int
    settings: QueueSettings | None = None  # filled in by QueueOverview
    held: dict[Hold, int] = field(factory=dict)  # queued jobs held back by flow control, by reason (absent: none)


@frozen(kw_only=True)
class Throughput:
    """How many jobs of a queue reached one final state within one time bucket [start, start + bucket)."""

    queue: str
    start: datetime
    state: State  # succeeded, failed or cancelled
    count: int


class JobRepository(Protocol):
    async def add(self, jobs: Sequence[Job]) -> list[Submitted]:
        """Store new jobs all or nothing. A job whose idempotency key exists already is not stored;
        the existing job comes back with created=False instead."""
        ...

    async def get(self, job_id: str) -> Job:
        """The job; JobNotFound if unknown."""
        ...

    async def list(self, where: JobFilter, *, limit: int, cursor: str | None) -> Page[Job]:
        """Jobs matching `where`, newest first, keyset-paged by id."""
        ...

    async def save(self, job: Job, run: Run | None = None) -> list[Job]:
        """Write a transitioned job (and the run that ended, if any) iff the stored version is
        job.version - 1; StaleWrite otherwise. A job that so leaves its slot (running or dispatched) wakes held
        jobs of its key and queue in the same transaction; they come back, to be dispatched."""
        ...

    async def promote_due(self, now: datetime, limit: int) -> list[Promoted]:
        """Move up to `limit` scheduled/retry jobs with run_at <= now to queued (dispatched_at = now), earliest run_at
        first, in that order. Keyed jobs beyond their key's room are held instead (dispatch gating, as at submit)."""
        ...

    async def claim(self, job_ids: Sequence[str], *, worker_id: str, now: datetime, lease_seconds: float,
                    limited: Collection[str] = ()) -> list[Job]:
        """Start the given jobs that are still queued (others are skipped): running, attempt + 1, leased.
        Flow control is enforced here, atomically across workers (domain/flow.py): a job with a concurrency key,
        or of a queue that limits starts, starts only within its limits; the others are held (Job.hold). The
        caller names the queues it knows to limit starts (`limited`): jobs of other queues without a key take the
        unlimited path, which is all an unlimited deployment ever pays for."""
        ...

    async def adopt(self, job_ids: Sequence[str], *, worker_id: str, now: datetime) -> list[Job]:
        """The jobs among these that run under an unexpired lease of `worker_id`: what a claim gave this worker
        when its answer was lost (PostgreSQL restarted while the claim committed), so that the worker runs them
        instead of leaving their leases to expire."""
        ...

    async def renew(self, leases: Sequence[tuple[str, int]], *, now: datetime,
                    lease_seconds: float) -> list[str]:
        """Extend the leases (job id, token) still held at `now`; return the ids whose lease was lost."""
        ...

    async def finish(self, outcomes: Sequence[Finished], *, now: datetime,
                     limited: Collection[str] = ()) -> Recorded:
        """Record ended attempts in one go. Each write is fenced: applied only if the job is still
        running under the same lease token and the lease has not expired at `now`. In the same transaction,
        held jobs of the keys and of the `limited` queues whose slots this frees are woken (Recorded.woken)."""
        ...

    async def expired(self, now: datetime, limit: int) -> list[Job]:
        """Running jobs whose lease expired at `now` (their worker is presumed lost)."""
        ...

    async def redispatch(self, now: datetime, older_than: datetime, limit: int) -> list[Job]:
        """Queued jobs (not held) last dispatched before `older_than`: stamp them dispatched at `now` and return
        them. Those of a paused queue are held instead (and not returned): nothing would pop them."""
        ...

    async def wake(self, now: datetime, *, limit: int, queue: str | None = None,
                   held_before: datetime | None = None) -> list[Job]:
        """Held jobs (of `queue` only, if given; held before `held_before` only, if given) whose key and queue have
        room at `now`, up to `limit`: no longer held, stamped dispatched at `now`, returned to be dispatched. The
        sweep that makes a lost wake-up cost time, never a job; and what a queue's resume calls."""
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest run_at of a scheduled or retry job, to know how long the scheduler may sleep."""
        ...

    async def runs(self, job_id: str) -> list[Run]:
        """Execution history of a job, oldest first; JobNotFound if the job is unknown."""
        ...

    async def queue_stats(self, now: datetime, *, totals: bool = True) -> list[QueueStats]:
        """Per queue: jobs by state, the oldest queued job, the jobs finished in the last minute, the held jobs.
        totals=False counts the IN_FLIGHT states only (the others are left out of `counts`, and so are queues with
        nothing in flight and nothing finished in the last minute): it costs what is queued and running, not
        what waits or is kept until pruned, for the gauges' frequent refresh."""
        ...

    async def prune(self, finished_before: datetime, limit: int) -> int:
        """Delete up to `limit` terminal jobs (and their runs) finished before the instant."""
        ...

    async def save_many(self, changes: Sequence[Finished]) -> Recorded:
        """Write transitioned jobs (with the runs that ended, if any) in one go, each iff its stored version is
        job.version - 1. Refused: the ids not written (changed meanwhile, or unknown); the others are written.
        Woken: held jobs whose slots the written jobs freed, as `save` does."""
        ...

    async def throughput(self, since: datetime, bucket: timedelta) -> list[Throughput]:
        """Jobs that reached a final state at or after `since`, counted per queue, final state and bucket of
        length `bucket` counted from `since`. Buckets without a job are left out."""
        ...


Planner = Callable[[Schedule, Job | None], Firing]


@frozen(kw_only=True)
class Fired:
    """What recording firings did: the jobs stored, the jobs their cancel_other cancelled (with the runs that ended:
    a run means the job was running, and its worker should be told), and the held jobs those cancels woke (no
    longer held, stamped dispatched: the caller pushes them, or the sweep will)."""

    jobs: list[Job]
    cancelled: list[Finished] = field(factory=list)
    woken: list[Job] = field(factory=list)


class ScheduleRepository(Protocol):
    async def add(self, schedule: Schedule) -> None:
        """DuplicateSchedule if the name is taken."""
        ...

    async def get(self, key: str) -> Schedule:
        """By id or by name; ScheduleNotFound if neither matches."""
        ...

    async def list(self, *, limit: int, cursor: str | None) -> Page[Schedule]:
        ...

    async def save(self, schedule: Schedule) -> None:
        """Compare-and-set on version (StaleWrite); DuplicateSchedule on a renamed clash."""
        ...

    async def delete(self, schedule_id: str) -> None:
        ...

    async def record(self, firing: Firing) -> Fired:
        """Atomically: save firing.schedule (CAS), cancel firing.cancel_job_ids (cancel_other; held jobs of their
        keys and limited queues are woken), store its jobs - skipping any whose (schedule_id, scheduled_for) exists
        already - and append its occurrences to the ledger. The cancels come before the new jobs are gated, so a
        new job of the cancelled one's key is not held behind it."""
        ...

    async def fire_due(self, now: datetime, limit: int, plan: Planner) -> Fired:
        """For up to `limit` schedules due at `now`, each locked so that one replica handles it: call
        plan(schedule, its last fired job) and record the firing as `record` does."""
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest due_at of any schedule."""
        ...

    async def occurrences(self, schedule_id: str, *, limit: int, cursor: str | None) -> Page[Occurrence]:
        """The occurrence ledger of a schedule, newest first."""
        ...

    async def fired_for(self, schedule_id: str, start: datetime, end: datetime) -> set[datetime]:
        """Occurrence times in [start, end] that already have a job."""
        ...


class QueueSettingsRepository(Protocol):
    """The runtime limits of queues (SPEC §6). A queue nobody configured has none."""

    async def all(self) -> list[QueueSettings]:
        """Every queue with stored settings, by name."""
        ...

    async def get(self, queue: str) -> QueueSettings:
        """The queue's settings; no limits (and no updated_at) when none are stored."""
        ...

    async def upsert(self, settings: QueueSettings) -> None:
        """Store the queue's settings, replacing any."""
        ...


class Dispatcher(Protocol):
    async def push(self, jobs: Sequence[Dispatchable]) -> None:
        """Make the jobs available to workers of their queues, highest priority first."""
        ...

    async def pop(self, queues: Sequence[str], *, limit: int, timeout: float) -> list[str]:
        """Up to `limit` job ids from the first non-empty queue in order, waiting up to `timeout` s."""
        ...

    async def pop_rated(self, queue: str, *, limit: int, rate: float, burst: float, timeout: float) -> list[str]:
        """Up to `limit` job ids of `queue`, no more than its token bucket grants (max_per_second): one bucket per
        queue shared by every worker, refilling at `rate` per second up to `burst`, paying one token per id
        popped. Waits up to `timeout` s for ids; without a token, returns nothing within about 1 / rate s."""
        ...

    async def size(self, queue: str) -> int:
        ...


class Wakeup(Protocol):
    """Lets a submitter wake sleeping schedulers when something is due sooner than they planned."""

    async def notify(self) -> None:
        ...

    async def wait(self, timeout: float) -> None:
        """Return after `timeout` seconds, or sooner when notified."""
        ...


class Cancellations(Protocol):
    """Tells workers at once that running jobs were cancelled. Best effort: a worker also learns it at its
    next heartbeat from the database, which alone decides, so a lost notice only costs time."""

    async def announce(self, job_ids: Sequence[str]) -> None:
        """Tell every listening worker that these jobs were cancelled (already committed)."""
        ...

    async def listen(self, timeout: float) -> list[str]:
        """Ids announced since the last call, waiting up to `timeout` s for one; may return spurious ids."""
        ...


class Handler(Protocol):
    def __call__(self, payload: dict[str, Any], ctx: Any) -> Any | Awaitable[Any]:
        ...


class TaskRegistry(Protocol):
    def names(self) -> frozenset[str] | None:
        """The task names this deployment runs; None when this process does not know the registry."""
        ...

    def handler(self, name: str) -> Handler | None:
        ...


class TaskContext(Protocol):
    """What a handler gets besides its payload (SPEC §5, §6)."""

    job_id: str
    attempt: int
    deadline: datetime
    scheduled_for: datetime | None
    lateness_seconds: float

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled or its lease lost: stop soon."""
        ...

    def heartbeat(self) -> None:
        """Ask for the lease to be renewed now (the worker also renews on its own)."""
        ...

    def fail_permanently(self, reason: str) -> None:
        """Raise PermanentFailure: the job fails now, with no further attempts."""
        ...


class Metrics(Protocol):
    """Where the use cases report what they did, for monitoring. Counters take a count so that a batch is
    reported once per (label set), not once per job; histograms take one observation per call."""

    def jobs_submitted(self, queue: str, task: str, n: int) -> None:
        """New jobs stored by a submit (a repeated idempotency key stores nothing and is not counted)."""
        ...

    def jobs_fired(self, n: int) -> None:
        """Jobs created by schedules firing."""
        ...

    def jobs_promoted(self, n: int) -> None:
        """Waiting (scheduled or retry) jobs that became queued because they were due."""
        ...

    def jobs_claimed(self, queue: str, n: int) -> None:
        """Jobs a worker started."""
        ...

    def jobs_finished(self, queue: str, task: str, outcome: str, n: int) -> None:
        """Attempts that ended, by outcome (a Run outcome, or `released` when handed back at shutdown)."""
        ...

    def run_durations(self, task: str, seconds: Sequence[float]) -> None:
        """How long each of these attempts of `task` ran (one call per task of a batch of outcomes)."""
        ...

    def lateness(self, queue: str, seconds: Sequence[float]) -> None:
        """Start minus due time of each of these attempts in `queue` (one call per queue of a claim)."""
        ...

    def tick_duration(self, seconds: float) -> None:
        """How long one scheduler tick took."""
        ...

    def lease_rescues(self, n: int) -> None:
        """Running jobs whose lease expired and whose attempt the scheduler recorded as lost."""
        ...

    def redispatches(self, n: int) -> None:
        """Queued jobs pushed again because their dispatch was presumed lost."""
        ...

    def queue_stats(self, stats: Sequence[QueueStats], now: datetime) -> None:
        """Replace the queue depth (jobs by state), held jobs (by reason) and oldest-queued-age gauges with these
        figures."""
        ...

    def jobs_woken(self, queue: str, by: str, n: int) -> None:
        """Held jobs dispatched because a slot freed, by who woke them (application/reporting.py: BY_*)."""
        ...


class NoMetrics:
    """Metrics that go nowhere: the default of every use case, so that wiring metrics stays optional."""

    def jobs_submitted(self, queue: str, task: str, n: int) -> None:
        pass

    def jobs_fired(self, n: int) -> None:
        pass

    def jobs_promoted(self, n: int) -> None:
        pass

    def jobs_claimed(self, queue: str, n: int) -> None:
        pass

    def jobs_finished(self, queue: str, task: str, outcome: str, n: int) -> None:
        pass

    def run_durations(self, task: str, seconds: Sequence[float]) -> None:
        pass

    def lateness(self, queue: str, seconds: Sequence[float]) -> None:
        pass

    def tick_duration(self, seconds: float) -> None:
        pass

    def lease_rescues(self, n: int) -> None:
        pass

    def redispatches(self, n: int) -> None:
        pass

    def queue_stats(self, stats: Sequence[QueueStats], now: datetime) -> None:
        pass

    def jobs_woken(self, queue: str, by: str, n: int) -> None:
        pass


NO_METRICS: Metrics = NoMetrics()
