"""When a recurring rule fires, in UTC instants (SPEC §3). The only module that touches croniter.

Cron is evaluated on the wall clock of the schedule's zone: a wall time that happens twice (fall back)
fires once, at its first instant; one that does not exist (spring forward) fires once, at the first
instant after the gap. Intervals are absolute: evenly spaced in UTC whatever the zone does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from attrs import frozen
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from domain.errors import InvalidInput


def zone(name: str, where: str = "timezone") -> ZoneInfo:
    if name not in _zone_names():
        raise InvalidInput({where: f"unknown IANA time zone {name!r}"})
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput({where: f"unknown IANA time zone {name!r}"}) from exc


_ZONES: set[str] = set()


def _zone_names() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones(), {"UTC"})
    return _ZONES


def to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant of a naive wall time in `tz`: first instant if repeated, end of gap if skipped."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In a gap: fold=1 uses the offset after the transition, giving an instant before it; the
    # transition itself lies between the two readings. Bisect to the second.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    after = high.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == after:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0) if high.microsecond else high


# croniter 7 reads a range with equal bounds ("3-3", "MON-MON") as the whole cycle; cron reads it as that one
# value, and so does gnomon: such a range is rewritten to its value before croniter sees it.
_EQUAL_RANGE = re.compile(r"(?<![\w-])(\w+)-\1(?:/\d+)?(?![\w-])", re.IGNORECASE)


def _croniter(expression: str, start: datetime) -> croniter:
    six = len(expression.split()) == 6
    return croniter(_EQUAL_RANGE.sub(r"\1", expression), start, second_at_beginning=six)


GAP_LOOKBACK = timedelta(hours=3)  # longer than any DST gap


@frozen
class Cron:
    """A cron expression: 5 fields, or 6 with seconds first."""

    expression: str

    @classmethod
    def parse(cls, expression: str, where: str = "cron") -> Cron:
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise InvalidInput({where: "must have 5 fields, or 6 with seconds first"})
        try:
            _croniter(expression, datetime(2000, 1, 1))
            ok = croniter.is_valid(expression, second_at_beginning=len(fields) == 6)
        except (CroniterBadCronError, ValueError, KeyError) as exc:
            raise InvalidInput({where: f"invalid cron expression: {exc}"}) from exc
        if not ok:
            raise InvalidInput({where: "invalid cron expression"})
        try:  # "0 0 30 2 *" is well formed but never fires: croniter would raise at the first tick
            _croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError as exc:
            raise InvalidInput({where: "no date ever matches this cron expression"}) from exc
        return cls(" ".join(fields))

    def walls(self, start: datetime) -> Iterator[datetime]:
        """Naive wall times matching the expression, strictly after the naive `start`."""
        it = _croniter(self.expression, start)
        while True:
            yield it.get_next(datetime)

    def preceding(self, before: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Fire instants strictly before the UTC instant `before`, decreasing (for long backlogs)."""
        last = before
        local = before.astimezone(tz).replace(tzinfo=None, fold=0)
        offset = before.astimezone(tz).utcoffset()
        # A wall time a little after the local reading may map to an earlier instant (the repeated hour
        # of a fall-back maps to its first pass), so start past any recent change of offset.
        if any((before + d).astimezone(tz).utcoffset() != offset for d in (GAP_LOOKBACK, -GAP_LOOKBACK)):
            local += GAP_LOOKBACK
        it = _croniter(self.expression, local)
        while True:
            instant = to_utc(it.get_prev(datetime), tz)
            if instant < last:
                last = instant
                yield instant

    def following(self, after: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Fire instants strictly after the UTC instant `after`, increasing."""
        last = after
        local = after.astimezone(tz).replace(tzinfo=None, fold=0)
        # A wall time a little before the local reading of `after` may map to an instant after it (inside a
        # gap), so when the zone's offset changed lately, start before the change; anything at or before
        # `after` is filtered out below. Otherwise start right there: walking hours of a per-second rule on
        # every call would cost a scheduler tick seconds.
        if (after - GAP_LOOKBACK).astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset():
            local -= GAP_LOOKBACK
        for wall in self.walls(local):
            instant = to_utc(wall, tz)
            if instant > last:
                last = instant
                yield instant


@frozen
class Interval:
    """Every `seconds`, anchored at `anchor`: anchor + k * seconds, in absolute time."""

    seconds: int
    anchor: datetime

    def following(self, after: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        step = timedelta(seconds=self.seconds)
        k = max((after - self.anchor) // step + 1, 0)
        instant = self.anchor + k * step
        while True:
            yield instant
            instant += step

    def preceding(self, before: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        step = timedelta(seconds=self.seconds)
        k = -((self.anchor - before) // step) - 1  # the largest k with anchor + k * step < before
        while k >= 0:
            yield self.anchor + k * step
            k -= 1


Rule = Cron | Interval


def next_after(rule: Rule, after: datetime, tz: ZoneInfo) -> datetime:
    return next(iter(rule.following(after, tz)))
