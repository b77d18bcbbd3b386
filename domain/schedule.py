"""Recurring jobs (SPEC §3): when a schedule fires, what happens to each occurrence, and why.

`Schedule.plan` is the heart of the scheduler tick: given the instant and the last job the schedule fired,
it decides the fate of every occurrence that came due (misfire, overlap, max_runs, jitter) and returns a
`Firing`: the new schedule value, the jobs to create and the ledger entries that explain every occurrence.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo

from attrs import evolve, field, frozen

from domain.errors import Conflict, InvalidInput
from domain.job import Job, JobSpec, must_be_aware
from domain.recurrence import Cron, Interval, Rule, zone
from domain.retry import unit_below


class MisfirePolicy(StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"
    RUN_ALL = "run_all"


class OverlapPolicy(StrEnum):
    ALLOW = "allow"
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    CANCEL_OTHER = "cancel_other"


class Fate(StrEnum):
    FIRED = "fired"
    SKIPPED_OVERLAP = "skipped_overlap"
    MISSED = "missed"
    COALESCED = "coalesced"
    BUFFERED = "buffered"
    PAUSED = "paused"


NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/ -]{0,199}$")
ENUMERATION_CAP: Final = 20_000  # occurrences walked in one plan; past it the backlog is summarised
BACKFILL_CAP: Final = 10_000
BUFFER_RECHECK: Final = timedelta(seconds=1)
NewId = Callable[[datetime], str]


@frozen(kw_only=True)
class Occurrence:
    """A ledger entry: the fate of one occurrence, or of a run of `count` consecutive ones up to `until`."""

    schedule_id: str
    scheduled_for: datetime
    fate: Fate
    recorded_at: datetime
    job_id: str | None = None
    count: int | None = 1  # None: more than could be counted (a backlog past ENUMERATION_CAP)
    until: datetime | None = None


@frozen(kw_only=True)
class ScheduleSpec:
    """What a client asks for; checked by Schedule.create / Schedule.revise."""

    name: str
    job: JobSpec
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"
    misfire_policy: MisfirePolicy = field(default=MisfirePolicy.RUN_ONCE, converter=MisfirePolicy)
    misfire_grace_seconds: int = 60
    max_catchup: int = 100
    overlap_policy: OverlapPolicy = field(default=OverlapPolicy.ALLOW, converter=OverlapPolicy)
    jitter_seconds: int = 0
    start_at: datetime | None = field(default=None, validator=must_be_aware)
    end_at: datetime | None = field(default=None, validator=must_be_aware)
    max_runs: int | None = None

    def rule(self, anchor: datetime) -> Rule:
        """The parsed rule; InvalidInput naming every broken field otherwise."""
        problems = self.job.problems("job.")
        rules = {
            "name": bool(NAME.match(self.name)),
            "cron": (self.cron is None) != (self.interval_seconds is None),
            "interval_seconds": self.interval_seconds is None or 1 <= self.interval_seconds <= 366 * 86400,
            "misfire_grace_seconds": 0 <= self.misfire_grace_seconds <= 366 * 86400,
            "max_catchup": 1 <= self.max_catchup <= BACKFILL_CAP,
            "jitter_seconds": 0 <= self.jitter_seconds <= 86400,
            "end_at": self.end_at is None or self.start_at is None or self.end_at > self.start_at,
            "max_runs": self.max_runs is None or self.max_runs >= 1,
            "job.run_at": self.job.run_at is None,
            "job.idempotency_key": self.job.idempotency_key is None,
        }
        messages = {
            "name": "must be 1 to 200 characters: letters, digits, space and _ . : @ / -",
            "cron": "give exactly one of cron and interval_seconds",
            "interval_seconds": "must be between 1 and 31622400 (366 days)",
            "misfire_grace_seconds": "must be between 0 and 31622400",
            "max_catchup": f"must be between 1 and {BACKFILL_CAP}",
            "jitter_seconds": "must be between 0 and 86400",
            "end_at": "must be after start_at",
            "max_runs": "must be at least 1",
            "job.run_at": "a schedule's job template has no run_at: the schedule decides it",
            "job.idempotency_key": "a schedule's job template has no idempotency_key",
        }
        problems.update({name: messages[name] for name, ok in rules.items() if not ok})
        tz_problem = _problem(lambda: zone(self.timezone))
        cron_problem = _problem(lambda: Cron.parse(self.cron)) if self.cron is not None else {}
        problems.update(tz_problem | cron_problem)
        if problems:
            raise InvalidInput(problems)
        if self.cron is not None:
            return Cron.parse(self.cron)
        return Interval(seconds=self.interval_seconds or 0, anchor=self.start_at or anchor)


def _problem(check: Callable[[], object]) -> dict[str, str]:
    try:
        check()
    except InvalidInput as exc:
        return exc.errors
    return {}


@frozen(kw_only=True)
class Firing:
    """What one decision about a schedule amounts to; recorded atomically by the repository."""

    schedule: Schedule
    jobs: tuple[Job, ...] = ()
    occurrences: tuple[Occurrence, ...] = ()
    cancel_job_ids: tuple[str, ...] = ()


@frozen(kw_only=True)
class Schedule:
    id: str
    spec: ScheduleSpec
    created_at: datetime = field(validator=must_be_aware)
    updated_at: datetime = field(validator=must_be_aware)
    next_fire_at: datetime | None = None  # nominal time of the next occurrence; None once exhausted
    last_fired_at: datetime | None = None
    last_job_id: str | None = None
    fired_count: int = 0
    paused: bool = False
    pause_note: str | None = None
    paused_at: datetime | None = None
    paused_until: datetime | None = None
    buffered_for: datetime | None = None  # an occurrence waiting for the previous job (buffer_one)
    recheck_at: datetime | None = None
    version: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.spec.timezone)

    @property
    def rule(self) -> Rule:
        return self.spec.rule(self.created_at)

    @property
    def due_at(self) -> datetime | None:
        """When the scheduler should next look at this schedule."""
        if self.paused:
            return self.paused_until
        times = [t for t in (self.next_fire_at, self.recheck_at) if t is not None]
        return min(times) if times else None

    @classmethod
    def create(cls, schedule_id: str, spec: ScheduleSpec, *, now: datetime) -> Schedule:
        spec.rule(now)
        draft = cls(id=schedule_id, spec=spec, created_at=now, updated_at=now)
        return evolve(draft, next_fire_at=draft._first_from(now))

    def revise(self, spec: ScheduleSpec, *, now: datetime) -> Schedule:
        """New settings; the next occurrence is recomputed from now."""
        spec.rule(self.created_at)
        draft = evolve(self, spec=spec, updated_at=now, version=self.version + 1)
        return evolve(draft, next_fire_at=draft._first_from(now))

    def pause(self, *, now: datetime, note: str | None = None, until: datetime | None = None) -> Schedule:
        if until is not None and until <= now:
            raise InvalidInput({"until": "must be in the future"})
        return evolve(self, paused=True, pause_note=note, paused_at=self.paused_at or now, paused_until=until,
                      updated_at=now, version=self.version + 1)

    def resume(self, *, now: datetime, previous: Job | None, new_id: NewId) -> Firing:
        """Resume; occurrences that fell in the pause follow the misfire policy (unfired ones: `paused`)."""
        if not self.paused:
            raise Conflict(f"schedule {self.name!r} is not paused")
        awake = evolve(self, paused=False, pause_note=None, paused_at=None, paused_until=None)
        return awake._advance(now, previous, new_id, Fate.PAUSED)

    def plan(self, *, now: datetime, previous: Job | None, new_id: NewId) -> Firing:
        """Decide every occurrence due at `now`. `previous` is the last job this schedule fired."""
        if self.paused:
            if self.paused_until is not None and self.paused_until <= now:
                return self.resume(now=now, previous=previous, new_id=new_id)
            return Firing(schedule=self)
        return self._advance(now, previous, new_id, Fate.MISSED)

    def trigger(self, *, now: datetime, new_id: NewId) -> Firing:
        """Fire one job now, outside the rule (manual run; counts neither as an occurrence nor to max_runs)."""
        job = self._job(now, now, new_id, jitter=False)
        entry = self._entry(now, Fate.FIRED, now, job_id=job.id)
        moved = evolve(self, last_fired_at=now, last_job_id=job.id, updated_at=now, version=self.version + 1)
        return Firing(schedule=moved, jobs=(job,), occurrences=(entry,))

    def backfill(self, *, start: datetime, end: datetime, already: set[datetime], now: datetime,
                 new_id: NewId) -> Firing:
        """Fire the occurrences in [start, end] (and within start_at/end_at) that have no job yet; each at most once."""
        if end > now or start > end:
            raise InvalidInput({"end": "the range must satisfy start <= end <= now"})
        todo: list[datetime] = []
        for occurrence in self._following(start - timedelta(microseconds=1)):
            if occurrence > end:
                break
            if occurrence not in already:
                todo.append(occurrence)
            if len(todo) > BACKFILL_CAP:
                raise InvalidInput({"start": f"the range holds more than {BACKFILL_CAP} occurrences"})
        jobs = tuple(self._job(o, now, new_id) for o in todo)
        entries = tuple(self._entry(j.scheduled_for or now, Fate.FIRED, now, job_id=j.id) for j in jobs)
        moved = evolve(self, updated_at=now, version=self.version + 1)
        return Firing(schedule=moved, jobs=jobs, occurrences=entries)

    def preview(self, count: int, *, after: datetime) -> list[datetime]:
        """The next `count` fire times (nominal, before jitter) from `after`, within start/end/max_runs."""
        times: list[datetime] = []
        start = self.next_fire_at if self.next_fire_at and self.next_fire_at > after else None
        cursor = start - timedelta(microseconds=1) if start else after
        left = None if self.spec.max_runs is None else self.spec.max_runs - self.fired_count
        for occurrence in self._following(cursor):
            if len(times) >= count or (left is not None and len(times) >= left):
                break
            times.append(occurrence)
        return times

    def jitter(self, occurrence: datetime) -> timedelta:
        """Stable per (schedule, occurrence): a retried tick picks the same delay."""
        span = self.spec.jitter_seconds * 1_000_000  # in microseconds, the resolution of a timedelta
        return timedelta(microseconds=unit_below(span, self.id, occurrence.isoformat()))

    # -- the tick -------------------------------------------------------------------------------

    def _advance(self, now: datetime, previous: Job | None, new_id: NewId, unfired: Fate) -> Firing:
        backlog = _Backlog(self, now, keep=self.spec.max_catchup)
        fire, entries = self._misfire(backlog, now, unfired)
        left = None if self.spec.max_runs is None else self.spec.max_runs - self.fired_count
        active = previous is not None and not previous.terminal
        buffered = self.buffered_for
        if buffered is not None and not active:
            fire.insert(0, buffered)
            buffered = None
        jobs: list[Job] = []
        cancel: list[str] = []
        if self.spec.overlap_policy is OverlapPolicy.CANCEL_OTHER and fire:
            entries += [self._entry(o, Fate.SKIPPED_OVERLAP, now) for o in fire[:-1]]
            fire = fire[-1:]
            if active and previous is not None:
                cancel.append(previous.id)
                active = False
        for occurrence in fire:
            if left is not None and len(jobs) >= left:
                break  # max_runs counts jobs, not occurrences let through: the schedule ends here
            policy = self.spec.overlap_policy
            if active and policy is OverlapPolicy.SKIP:
                entries.append(self._entry(occurrence, Fate.SKIPPED_OVERLAP, now))
            elif active and policy is OverlapPolicy.BUFFER_ONE:
                fate = Fate.SKIPPED_OVERLAP if buffered is not None else Fate.BUFFERED
                buffered = buffered or occurrence
                entries.append(self._entry(occurrence, fate, now))
            else:
                job = self._job(occurrence, now, new_id)
                jobs.append(job)
                entries.append(self._entry(occurrence, Fate.FIRED, now, job_id=job.id))
                active = True
        exhausted = left is not None and len(jobs) >= left
        next_fire = None if exhausted or backlog.next_fire is None else backlog.next_fire
        moved = evolve(
            self, next_fire_at=next_fire, buffered_for=buffered,
            recheck_at=now + BUFFER_RECHECK if buffered is not None else None,
            fired_count=self.fired_count + len(jobs),
            last_fired_at=now if jobs else self.last_fired_at,
            last_job_id=jobs[-1].id if jobs else self.last_job_id,
            paused=self.paused, updated_at=now, version=self.version + 1,
        )
        entries.sort(key=lambda e: e.scheduled_for)
        return Firing(schedule=moved, jobs=tuple(jobs), occurrences=tuple(entries), cancel_job_ids=tuple(cancel))

    def _misfire(self, backlog: _Backlog, now: datetime, unfired: Fate) -> tuple[list[datetime], list[Occurrence]]:
        """Which due occurrences fire, and the ledger entries for the late ones that do not."""
        late, on_time, policy = backlog.late_kept, backlog.on_time, self.spec.misfire_policy
        if not late:
            return list(on_time), []
        if policy is MisfirePolicy.SKIP:
            return list(on_time), [self._range(backlog, backlog.late_count, late[-1], unfired, now)]
        if policy is MisfirePolicy.RUN_ONCE:
            if on_time:
                return list(on_time), [self._range(backlog, backlog.late_count, late[-1], Fate.COALESCED, now)]
            entries = []
            if backlog.late_count is None or backlog.late_count > 1:
                count = None if backlog.late_count is None else backlog.late_count - 1
                entries.append(self._range(backlog, count, late[-2] if len(late) > 1 else late[-1],
                                           Fate.COALESCED, now))
            return [late[-1], *on_time], entries
        fired = list(late)[-self.spec.max_catchup:]
        dropped = None if backlog.late_count is None else backlog.late_count - len(fired)
        entries = []
        if dropped is None or dropped > 0:
            last_dropped = list(late)[-len(fired) - 1] if len(late) > len(fired) else backlog.first_late
            entries.append(self._range(backlog, dropped, last_dropped, unfired, now))
        return [*fired, *on_time], entries

    def _range(self, backlog: _Backlog, count: int | None, until: datetime, fate: Fate, now: datetime) -> Occurrence:
        first = backlog.first_late
        return Occurrence(schedule_id=self.id, scheduled_for=first, fate=fate, recorded_at=now, count=count,
                          until=until if (count is None or count > 1) else None)

    def _entry(self, occurrence: datetime, fate: Fate, now: datetime, *, job_id: str | None = None) -> Occurrence:
        return Occurrence(schedule_id=self.id, scheduled_for=occurrence, fate=fate, recorded_at=now, job_id=job_id)

    def _job(self, occurrence: datetime, now: datetime, new_id: NewId, *, jitter: bool = True) -> Job:
        run_at = occurrence + (self.jitter(occurrence) if jitter else timedelta(0))
        spec = evolve(self.spec.job, run_at=run_at)
        return Job.create(new_id(now), spec, now=now, schedule_id=self.id, scheduled_for=occurrence)

    def _preceding(self, before: datetime) -> Iterable[datetime]:
        """Occurrences strictly before `before`, decreasing, never before start_at nor after end_at."""
        start, end = self.spec.start_at, self.spec.end_at
        for occurrence in self.rule.preceding(before, self.tz):
            if start is not None and occurrence < start:
                return
            if end is None or occurrence <= end:
                yield occurrence

    def _following(self, after: datetime) -> Iterable[datetime]:
        """Occurrences strictly after `after`, never before start_at nor after end_at."""
        start, end = self.spec.start_at, self.spec.end_at
        if start is not None and after < start:
            after = start - timedelta(microseconds=1)
        for occurrence in self.rule.following(after, self.tz):
            if end is not None and occurrence > end:
                return
            yield occurrence

    def _first_from(self, now: datetime) -> datetime | None:
        if self.spec.max_runs is not None and self.fired_count >= self.spec.max_runs:
            return None
        return next(iter(self._following(now)), None)


class _Backlog:
    """Walks the occurrences from next_fire_at to now once, keeping what the policies need.

    A backlog longer than ENUMERATION_CAP is not walked to the end: the walk jumps to the misfire horizon
    and takes the latest occurrences before it walking backwards, so `late_kept` still holds the latest
    late ones; the count of the range in between is then unknown (None) but the range is still recorded.
    """

    def __init__(self, schedule: Schedule, now: datetime, *, keep: int) -> None:
        self.late_kept: deque[datetime] = deque(maxlen=keep + 1)
        self.on_time: list[datetime] = []
        self.late_count: int | None = 0
        self.first_late = now
        self.next_fire: datetime | None = None
        self._schedule, self._now, self._keep = schedule, now, keep
        if schedule.next_fire_at is None:
            return
        horizon = now - timedelta(seconds=schedule.spec.misfire_grace_seconds)
        for walked, occurrence in enumerate(schedule._following(schedule.next_fire_at - _TICK), start=1):
            if occurrence >= horizon:
                self._on_time_from(occurrence)
                return
            if walked == 1:
                self.first_late = occurrence
            self.late_kept.append(occurrence)
            self.late_count = walked
            if walked >= ENUMERATION_CAP:
                self._jump(horizon, occurrence)
                return

    def _jump(self, horizon: datetime, last_walked: datetime) -> None:
        tail = [t for t in itertools.islice(self._schedule._preceding(horizon), self._keep + 1) if t > last_walked]
        self.late_kept.extend(reversed(tail))
        self.late_count = None
        first = next(iter(self._schedule._following(horizon - _TICK)), None)
        if first is not None:
            self._on_time_from(first)

    def _on_time_from(self, first: datetime) -> None:
        """Collect the occurrences from `first` (past the horizon) up to now; at most ENUMERATION_CAP."""
        for occurrence in itertools.chain([first], self._schedule._following(first)):
            if occurrence > self._now or len(self.on_time) >= ENUMERATION_CAP:
                self.next_fire = occurrence  # past the cap: the next plan, due at once, goes on from here
                return
            self.on_time.append(occurrence)


_TICK: Final = timedelta(microseconds=1)
