"""A backlog longer than the schedule walk's cap is still decided right: the latest late occurrences fire,
and the ledger covers the whole range (with an unknown count) up to what fired."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from domain.job import JobSpec
from domain.schedule import ENUMERATION_CAP, Fate, Schedule, ScheduleSpec

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DOWN = timedelta(seconds=ENUMERATION_CAP * 3 + 17)


def ids() -> object:
    counter = itertools.count()
    return lambda _now: f"job-{next(counter)}"


@pytest.mark.parametrize("rule", [{"interval_seconds": 1}, {"cron": "* * * * * *", "timezone": "Europe/Berlin"}])
@pytest.mark.parametrize("policy", ["run_all", "run_once", "skip"])
def test_a_backlog_past_the_cap_fires_the_latest_and_records_the_rest(rule: dict, policy: str) -> None:
    spec = ScheduleSpec(name="s", job=JobSpec(task="noop"), misfire_policy=policy, max_catchup=3,
                        misfire_grace_seconds=0, **rule)
    schedule = Schedule.create("sched", spec, now=T0)
    now = T0 + DOWN + timedelta(microseconds=500_000)
    firing = schedule.plan(now=now, previous=None, new_id=ids())
    horizon_last = now.replace(microsecond=0)  # the last occurrence at or before now (grace 0: all late)
    fired = sorted(j.scheduled_for for j in firing.jobs)
    expected = {"run_all": 3, "run_once": 1, "skip": 0}[policy]
    assert fired == [horizon_last - timedelta(seconds=i) for i in reversed(range(expected))]
    ranges = [e for e in firing.occurrences if e.fate is not Fate.FIRED]
    assert len(ranges) == 1 and ranges[0].scheduled_for == T0 + timedelta(seconds=1) and ranges[0].count is None
    assert ranges[0].until == horizon_last - timedelta(seconds=expected)
    assert firing.schedule.next_fire_at == horizon_last + timedelta(seconds=1)
