"""Shared hypothesis strategies for the domain properties: instants, zones with DST, job specs, backoffs,
cron expressions that carry their own (independent) matcher, and schedule specs."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import Final, TypeVar

from attrs import frozen
from hypothesis import strategies as st

from domain.job import JobSpec
from domain.retry import Backoff
from domain.schedule import MisfirePolicy, OverlapPolicy, Schedule, ScheduleSpec

# Zones with daylight saving time (now or in part of 1990-2060), picked for their awkward transitions.
DST_ZONES: Final = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Halifax",
    "America/St_Johns",  # half-hour offset
    "America/Havana",  # transitions at midnight
    "America/Santiago",  # spring forward at 24:00, fall back to 23:00 of the day before
    "America/Asuncion", "America/Sao_Paulo", "America/Nuuk", "America/Mexico_City", "America/Scoresbysund",
    "Europe/London", "Europe/Dublin",  # Dublin: "negative" DST in tzdata
    "Europe/Berlin", "Europe/Athens", "Europe/Moscow", "Europe/Chisinau",
    "Africa/Casablanca",  # clocks go back for Ramadan
    "Africa/Cairo", "Asia/Tehran", "Asia/Jerusalem", "Asia/Amman", "Asia/Beirut", "Asia/Gaza",
    "Australia/Sydney", "Australia/Adelaide",
    "Australia/Lord_Howe",  # 30-minute DST
    "Pacific/Auckland", "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Apia",  # skipped 30 December 2011 entirely (a 24-hour gap)
    "Pacific/Norfolk", "Antarctica/Troll",  # Troll: a 2-hour DST
)

T = TypeVar("T")
FIRST: Final = datetime(1990, 1, 1, tzinfo=UTC)
LAST: Final = datetime(2060, 12, 31, tzinfo=UTC)


def instants(start: datetime = FIRST, end: datetime = LAST) -> st.SearchStrategy[datetime]:
    """UTC-aware instants, microseconds included."""
    return st.datetimes(min_value=start.replace(tzinfo=None), max_value=end.replace(tzinfo=None),
                        timezones=st.just(UTC))


def whole_seconds(low: int, high: int) -> st.SearchStrategy[timedelta]:
    return st.integers(low, high).map(lambda s: timedelta(seconds=s))


def backoffs() -> st.SearchStrategy[Backoff]:
    """Reasonable backoffs, for jobs."""
    return st.builds(Backoff, base_seconds=st.sampled_from([0.0, 0.5, 1.0, 3.0, 60.0]),
                     factor=st.sampled_from([1.0, 1.5, 2.0, 10.0]),
                     max_seconds=st.sampled_from([0.0, 1.0, 30.0, 3600.0]), jitter=st.booleans())


def job_specs(*, run_at: st.SearchStrategy[datetime | None] | None = None) -> st.SearchStrategy[JobSpec]:
    return st.builds(JobSpec, task=st.sampled_from(["noop", "send_email"]),
                     payload=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
                     max_attempts=st.integers(1, 5), backoff=backoffs(), run_at=st.none() if run_at is None else run_at)


# -- cron -------------------------------------------------------------------------------------------

@frozen
class CronCase:
    """A cron expression and the value sets it stands for, so that a test can match wall times itself."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday, as in cron
    day_or: bool  # both day fields restricted: a day matches if either does (cron's rule)

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date, by_weekday = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        return (by_date or by_weekday) if self.day_or else (by_date and by_weekday)

    def matches(self, wall: datetime) -> bool:
        return (wall.second in self.seconds and wall.minute in self.minutes and wall.hour in self.hours
                and wall.microsecond == 0 and self.day_matches(wall.date()))

    @property
    def satisfiable(self) -> bool:
        """Some calendar day matches (leap days included)."""
        if self.day_or or len(self.weekdays) < 7:
            return True
        return any(d <= calendar.monthrange(2024, m)[1] for m in self.months for d in self.days)


def _field(low: int, high: int, *, star_forms: bool) -> st.SearchStrategy[tuple[str, frozenset[int]]]:
    span = high - low + 1

    @st.composite
    def part(draw: st.DrawFn) -> tuple[str, frozenset[int]]:
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        kind = draw(st.sampled_from(["one", "range", "step"]))
        if kind == "one":
            return str(a), frozenset({a})
        if kind == "range":
            return f"{a}-{b}", frozenset(range(a, b + 1))
        k = draw(st.integers(1, max(b - a, 1)))
        return f"{a}-{b}/{k}", frozenset(range(a, b + 1, k))

    @st.composite
    def field(draw: st.DrawFn) -> tuple[str, frozenset[int]]:
        choices = ["star", "list", "list"] + (["every"] if star_forms else [])
        kind = draw(st.sampled_from(choices))
        if kind == "star":
            return "*", frozenset(range(low, high + 1))
        if kind == "every":
            k = draw(st.integers(1, span))
            return f"*/{k}", frozenset(range(low, high + 1, k))
        parts = draw(st.lists(part(), min_size=1, max_size=3))
        return ",".join(p[0] for p in parts), frozenset().union(*(p[1] for p in parts))

    return field()


@st.composite
def cron_cases(draw: st.DrawFn, *, seconds: bool | None = None, sparse_days: bool = True) -> CronCase:
    """Random cron expressions (5 fields, or 6 with seconds first). Day fields avoid the `*/n` forms, whose
    day-or-day rule differs between cron implementations; a restricted day field is a proper subset."""
    six = draw(st.booleans()) if seconds is None else seconds
    sec = draw(_field(0, 59, star_forms=True)) if six else ("", frozenset({0}))
    minute, hour = draw(_field(0, 59, star_forms=True)), draw(_field(0, 23, star_forms=True))
    if sparse_days:
        dom = draw(_field(1, 31, star_forms=False).filter(lambda f: f[0] == "*" or len(f[1]) < 31))
        month = draw(_field(1, 12, star_forms=True))
        dow = draw(_field(0, 6, star_forms=False).filter(lambda f: f[0] == "*" or len(f[1]) < 7))
    else:
        dom, month, dow = ("*", frozenset(range(1, 32))), ("*", frozenset(range(1, 13))), ("*", frozenset(range(7)))
    fields = [sec[0]] if six else []
    fields += [minute[0], hour[0], dom[0], month[0], dow[0]]
    return CronCase(expression=" ".join(fields), seconds=sec[1], minutes=minute[1], hours=hour[1], days=dom[1],
                    months=month[1], weekdays=dow[1], day_or=dom[0] != "*" and dow[0] != "*")


# -- schedules --------------------------------------------------------------------------------------

def _given(strategy: st.SearchStrategy[T] | None, default: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    return default if strategy is None else strategy


def schedule_specs(*, interval: st.SearchStrategy[int] | None = None,
                   misfire: st.SearchStrategy[MisfirePolicy] | None = None,
                   overlap: st.SearchStrategy[OverlapPolicy] | None = None,
                   jitter: st.SearchStrategy[int] | None = None,
                   max_runs: st.SearchStrategy[int | None] | None = None) -> st.SearchStrategy[ScheduleSpec]:
    """Interval schedules (their occurrences are plain arithmetic, so a test can list them on its own); every
    setting is random unless a strategy for it is given (jitter defaults to none, max_runs to unlimited)."""
    return st.builds(ScheduleSpec, name=st.just("nightly report"), job=job_specs(),
                     interval_seconds=_given(interval, st.integers(1, 7200)),
                     misfire_policy=_given(misfire, st.sampled_from(MisfirePolicy)),
                     overlap_policy=_given(overlap, st.sampled_from(OverlapPolicy)),
                     misfire_grace_seconds=st.sampled_from([0, 1, 60, 3600]),
                     max_catchup=st.sampled_from([1, 2, 3, 10, 100]), jitter_seconds=_given(jitter, st.just(0)),
                     max_runs=_given(max_runs, st.none()))


T0: Final = datetime(2030, 1, 1, tzinfo=UTC)
previous_states = st.sampled_from(["none", "queued", "running", "done"])  # of the schedule's last job


@st.composite
def downtimes(draw: st.DrawFn, spec: st.SearchStrategy[ScheduleSpec] | None = None) -> tuple[Schedule, datetime]:
    """A fresh schedule and a `now` after a downtime of up to ~300 occurrences (ends on and off the grid)."""
    schedule = Schedule.create("sched-1", draw(schedule_specs() if spec is None else spec), now=T0)
    step = schedule.spec.interval_seconds or 1
    off = draw(st.sampled_from([0, -1, 1]) | st.integers(0, step - 1))
    now = schedule.next_fire_at + timedelta(seconds=draw(st.integers(0, 300)) * step + off)
    return schedule, now
