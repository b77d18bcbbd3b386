"""How values read on the dashboard: times (UTC, a zone's wall clock, relative), durations, JSON, rules.

Registered as Jinja filters and globals (templating.py); plain functions, so they are tested without a page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, tzinfo
from typing import Any

from domain.job import NEXT, TERMINAL, Job, State
from domain.schedule import Schedule

UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
BLANK = "\u2013"  # an en dash: no value


def span(seconds: float | None) -> str:
    """A duration for people: 0.42 s -> "420 ms", 75 -> "1 min 15 s", 90061 -> "1 d 1 h"."""
    if seconds is None:
        return BLANK
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    parts = []
    rest = int(seconds)
    for size, unit in UNITS:
        if rest >= size and len(parts) < 2:
            parts.append(f"{rest // size} {unit}")
            rest %= size
        elif parts:
            break
    return " ".join(parts)


def ago(value: datetime | None, now: datetime) -> str:
    """"5 min ago", "in 3 h", "just now"."""
    if value is None:
        return BLANK
    seconds = (now - value).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"{_rough(seconds)} ago" if seconds > 0 else f"in {_rough(seconds)}"


def age(value: datetime | None, now: datetime) -> str:
    """How long since `value`, in whole seconds at least: "7 min", "3 s"."""
    return BLANK if value is None else _rough(max((now - value).total_seconds(), 0.0))


def _rough(seconds: float) -> str:
    whole = int(abs(seconds))
    return f"{whole} s" if whole < 60 else span(float(whole))


def utc(value: datetime | None) -> str:
    return BLANK if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def local(value: datetime | None, zone: tzinfo) -> str:
    """The instant on a zone's wall clock, with the zone's abbreviation and offset: "2026-03-29 03:00 CEST (+02:00)"."""
    if value is None:
        return BLANK
    at = value.astimezone(zone)
    offset = at.strftime("%z")
    return f"{at:%Y-%m-%d %H:%M:%S} {at.tzname()} ({offset[:3]}:{offset[3:]})"


def wall(value: datetime | None, zone: tzinfo = UTC, offset: bool = False) -> str:
    """A fire time, compact: "2026-11-29 03:00 CET" (seconds only when there are any; the offset if asked)."""
    if value is None:
        return BLANK
    at = value.astimezone(zone)
    seconds = f":{at:%S}" if at.second or at.microsecond else ""
    text = f"{at:%Y-%m-%d %H:%M}{seconds} {at.tzname()}"
    if not offset:
        return text
    sign = at.strftime("%z")
    return f"{text} ({sign[:3]}:{sign[3:]})"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def rule(schedule: Schedule) -> str:
    spec = schedule.spec
    if spec.cron is not None:
        return spec.cron
    return f"every {span(spec.interval_seconds or 0)}"


def short(job_id: str | None) -> str:
    """The end of a UUIDv7: its start is a timestamp shared by jobs made together, its end is random."""
    return BLANK if job_id is None else job_id[-12:]


def can_cancel(job: Job) -> bool:
    return State.CANCELLED in NEXT.get(job.state, ())


def can_retry(job: Job) -> bool:
    """A manual retry takes a job from a final state back to its queue."""
    return job.state in TERMINAL and State.QUEUED in NEXT.get(job.state, ())


FILTERS = {"span": span, "ago": ago, "age": age, "utc": utc, "iso": iso, "local": local, "wall": wall, "pretty": pretty,
           "rule": rule, "short": short}
GLOBALS = {"can_cancel": can_cancel, "can_retry": can_retry, "STATES": [str(s) for s in State]}
