"""Recurrence (domain/recurrence.py) against an independent model of wall time built on zoneinfo alone.

Cron fire times strictly increase and are exactly the instants of the matching wall times: a wall time that
happens twice fires once, at its first instant; one inside a DST gap fires once, at the first instant after
the gap (several walls landing on one instant fire once). Checked for random 5- and 6-field expressions, for
daily and hourly expressions in ~35 zones with DST over 1990-2060 (random windows, plus a sweep over every
transition of every zone), and for to_utc itself. Parse accepts exactly the expressions that can fire.
Intervals are evenly spaced in UTC whatever the zone."""

from __future__ import annotations

import calendar
import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.recurrence import Cron, Interval, next_after, to_utc
from tests.unit.strategies import DST_ZONES, CronCase, cron_cases, instants

zones = st.sampled_from([*DST_ZONES, "UTC"])
years = st.integers(1990, 2060)
transition_hours = st.sampled_from([0, 1, 2, 3, 4, 22, 23]) | st.integers(0, 23)


def reading(instant: datetime, tz: ZoneInfo) -> datetime:
    """The naive wall-clock reading of an instant."""
    return instant.astimezone(tz).replace(tzinfo=None)


def exists(wall: datetime, tz: ZoneInfo) -> bool:
    return reading(wall.replace(tzinfo=tz, fold=0).astimezone(UTC), tz) == wall


def expected_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """SPEC §3 by brute force: a real wall time at its first instant; one in a gap at the first instant after
    it, found by stepping the wall clock a minute at a time to the first time that exists."""
    if exists(wall, tz):
        return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    probe = wall.replace(second=0, microsecond=0)
    for _ in range(26 * 60):
        probe += timedelta(minutes=1)
        if exists(probe, tz):
            return probe.replace(tzinfo=tz, fold=0).astimezone(UTC)
    raise AssertionError(f"no end to the gap around {wall} in {tz}")


def matching_walls(case: CronCase, low: datetime, high: datetime) -> Iterator[datetime]:
    """Every wall time in [low, high] the expression matches, in order, walked field by field."""
    day = low.date()
    while day <= high.date():
        if case.day_matches(day):
            for h, m, s in itertools.product(sorted(case.hours), sorted(case.minutes), sorted(case.seconds)):
                wall = datetime.combine(day, time(h, m, s))
                if wall > high:
                    return
                if wall >= low:
                    yield wall
        day += timedelta(days=1)


def expected_fires(walls: Iterable[datetime], tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    return sorted({i for i in (expected_instant(w, tz) for w in walls) if after < i <= until})


def fires_until(expression: str, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    return list(itertools.takewhile(lambda f: f <= until, Cron.parse(expression).following(after, tz)))


def same(fires: list[datetime], expected: list[datetime], tz: ZoneInfo) -> str:
    extra = [reading(f, tz).isoformat() for f in sorted(set(fires) - set(expected))]
    missing = [reading(f, tz).isoformat() for f in sorted(set(expected) - set(fires))]
    return f"in {tz}: unexpected fires at {extra}, missing fires at {missing}"


def transitions(tz: ZoneInfo, first_year: int, last_year: int) -> Iterator[datetime]:
    """Instants where the UTC offset changes (sampled weekly, then bisected to the second)."""
    probe = datetime(first_year, 1, 1, tzinfo=UTC)
    end = datetime(last_year + 1, 1, 1, tzinfo=UTC)
    while probe < end:
        nxt = probe + timedelta(days=7)
        if probe.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            low, high = probe, nxt
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                same_as_low = mid.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset()
                low, high = (mid, high) if same_as_low else (low, mid)
            yield high.replace(microsecond=0)
        probe = nxt


def affected_walls(moment: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The wall times a transition skips (gap) or repeats (overlap), as [start, end)."""
    before, after = reading(moment - timedelta(seconds=1), tz) + timedelta(seconds=1), reading(moment, tz)
    return min(before, after), max(before, after)


# -- cron, any expression -------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(case=cron_cases(), zone=zones, after=instants())
def test_cron_fires_exactly_at_the_matching_wall_times(case: CronCase, zone: str, after: datetime) -> None:
    assume(case.satisfiable)
    tz = ZoneInfo(zone)
    fires = list(itertools.islice(Cron.parse(case.expression).following(after, tz), 12))
    assert all(a < b for a, b in itertools.pairwise([after, *fires])), "fire times must strictly increase"
    for fire in fires:
        local = fire.astimezone(tz)
        gap = reading(fire - timedelta(seconds=1), tz) + timedelta(seconds=1) < reading(fire, tz)
        direct = case.matches(local.replace(tzinfo=None)) and local.fold == 0
        assert direct or gap, f"{case.expression}: {fire} reads {local}, which it does not match"
    expected = expected_fires(matching_walls(case, reading(after, tz), reading(fires[-1], tz)), tz, after, fires[-1])
    assert fires == expected, same(fires, expected, tz)


@settings(max_examples=200, deadline=None)
@given(case=cron_cases(), after=instants())
def test_parse_accepts_exactly_the_expressions_that_can_fire(case: CronCase, after: datetime) -> None:
    if not case.satisfiable:
        with pytest.raises(InvalidInput):
            Cron.parse(case.expression)
        return
    fire = next_after(Cron.parse(case.expression), after, ZoneInfo("UTC"))
    assert fire > after and case.matches(fire.replace(tzinfo=None))


@settings(max_examples=200, deadline=None)
@given(days=st.sets(st.integers(27, 31), min_size=1, max_size=3), months=st.sets(st.integers(1, 12), min_size=1,
       max_size=3), seconds=st.booleans())
def test_parse_refuses_a_day_that_no_month_has(days: set[int], months: set[int], seconds: bool) -> None:
    dates = f"{','.join(map(str, sorted(days)))} {','.join(map(str, sorted(months)))}"
    expression = f"{'0 ' if seconds else ''}0 12 {dates} *"
    possible = any(d <= calendar.monthrange(2024, m)[1] for d in days for m in months)
    if not possible:
        with pytest.raises(InvalidInput):
            Cron.parse(expression)
        return
    fire = next_after(Cron.parse(expression), datetime(2030, 1, 1, tzinfo=UTC), ZoneInfo("UTC"))
    assert fire.day in days and fire.month in months


# -- daily and hourly expressions across DST ------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(zone=zones, year=years, hour=transition_hours, minute=st.sampled_from([0, 15, 30, 45]) | st.integers(0, 59),
       second=st.none() | st.integers(0, 59), start=st.integers(0, 364))
def test_daily_cron_fires_once_per_local_day(zone: str, year: int, hour: int, minute: int, second: int | None,
                                            start: int) -> None:
    tz = ZoneInfo(zone)
    expression = f"{minute} {hour} * * *" if second is None else f"{second} {minute} {hour} * * *"
    after = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=start)
    until = after + timedelta(days=400)
    fires = fires_until(expression, tz, after, until)
    days = (reading(after, tz).date() + timedelta(days=n) for n in range(-1, 403))
    expected = expected_fires((datetime.combine(d, time(hour, minute, second or 0)) for d in days), tz, after, until)
    assert fires == expected, same(fires, expected, tz)


@settings(max_examples=100, deadline=None)
@given(zone=zones, year=years, minute=st.sampled_from([0, 30]) | st.integers(0, 59),
       second=st.none() | st.integers(0, 59), which=st.integers(0, 3))
def test_hourly_cron_fires_once_per_local_hour_around_transitions(zone: str, year: int, minute: int,
                                                                  second: int | None, which: int) -> None:
    tz = ZoneInfo(zone)
    moments = list(transitions(tz, year, year)) or [datetime(year, 6, 1, tzinfo=UTC)]
    moment = moments[which % len(moments)]
    after, until = moment - timedelta(days=2), moment + timedelta(days=2)
    expression = f"{minute} * * * *" if second is None else f"{second} {minute} * * * *"
    first = reading(after, tz).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    walls = [first + timedelta(hours=n, minutes=minute, seconds=second or 0) for n in range(24 * 6)]
    fires, expected = fires_until(expression, tz, after, until), expected_fires(walls, tz, after, until)
    assert fires == expected, same(fires, expected, tz)


@pytest.mark.parametrize("zone", DST_ZONES)
def test_every_transition_1990_2060_fires_once_inside_gaps_and_overlaps(zone: str) -> None:
    """A daily expression at the start and in the middle of each skipped or repeated stretch of wall time."""
    tz = ZoneInfo(zone)
    for moment in transitions(tz, 1990, 2060):
        start, end = affected_walls(moment, tz)
        for wall in (start, start + (end - start) / 2):
            wall = wall.replace(microsecond=0)
            expression = f"{wall.second} {wall.minute} {wall.hour} * * *"
            after, until = moment - timedelta(days=3), moment + timedelta(days=3)
            walls = [datetime.combine(wall.date() + timedelta(days=n), wall.time()) for n in range(-4, 5)]
            fires, expected = fires_until(expression, tz, after, until), expected_fires(walls, tz, after, until)
            assert fires == expected, same(fires, expected, tz)


@settings(max_examples=200, deadline=None)
@given(zone=zones, year=years, which=st.integers(0, 3), offset=st.integers(-3 * 3600, 3 * 3600),
       micro=st.integers(0, 999_999))
def test_to_utc_picks_the_first_instant_or_the_end_of_the_gap(zone: str, year: int, which: int, offset: int,
                                                              micro: int) -> None:
    tz = ZoneInfo(zone)
    moments = list(transitions(tz, year, year)) or [datetime(year, 3, 1, tzinfo=UTC)]
    start, _ = affected_walls(moments[which % len(moments)], tz)
    wall = start + timedelta(seconds=offset, microseconds=micro)
    expected = expected_instant(wall, tz)
    assert to_utc(wall, tz) == expected
    assert reading(expected, tz) == wall or not exists(wall, tz)


# -- intervals ------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(seconds=st.integers(1, 366 * 86400), anchor=instants(), after=instants(), zone=zones)
def test_intervals_are_evenly_spaced_in_utc_whatever_the_zone(seconds: int, anchor: datetime, after: datetime,
                                                               zone: str) -> None:
    rule, step = Interval(seconds=seconds, anchor=anchor), timedelta(seconds=seconds)
    fires = list(itertools.islice(rule.following(after, ZoneInfo(zone)), 30))
    assert fires == list(itertools.islice(rule.following(after, ZoneInfo("UTC")), 30))
    assert fires[0] > after and (fires[0] == anchor or fires[0] - step <= after)
    assert (fires[0] - anchor) % step == timedelta(0) and fires[0] >= anchor
    assert all(b - a == step for a, b in itertools.pairwise(fires))


def test_a_daily_job_at_half_past_two_in_new_york_fires_once_on_spring_and_fall_days() -> None:
    tz = ZoneInfo("America/New_York")
    spring = fires_until("30 2 * * *", tz, datetime(2030, 3, 9, 12, tzinfo=UTC), datetime(2030, 3, 11, 12, tzinfo=UTC))
    fall = fires_until("30 1 * * *", tz, datetime(2030, 11, 2, 12, tzinfo=UTC), datetime(2030, 11, 4, 12, tzinfo=UTC))
    assert [f.isoformat() for f in spring] == ["2030-03-10T07:00:00+00:00", "2030-03-11T06:30:00+00:00"]
    assert [f.isoformat() for f in fall] == ["2030-11-03T05:30:00+00:00", "2030-11-04T06:30:00+00:00"]
