"""How the dashboard writes times, durations and rules, and the geometry of its throughput charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.http.ui.charts import chart
from adapters.http.ui.formatting import BLANK, age, ago, local, span, utc, wall
from application.ports import Throughput
from application.throughput import ThroughputSeries
from domain.job import State

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "text"), [
    (None, BLANK), (0.0042, "4 ms"), (0.25, "250 ms"), (2.5, "2.50 s"), (59, "59 s"), (60, "1 min"),
    (75, "1 min 15 s"), (3600, "1 h"), (3725, "1 h 2 min"), (90061, "1 d 1 h"),
])
def test_span(seconds: float | None, text: str) -> None:
    assert span(seconds) == text


def test_ago_rounds_to_whole_seconds_both_ways() -> None:
    assert ago(T0, T0 + timedelta(milliseconds=300)) == "just now"
    assert ago(T0, T0 + timedelta(seconds=3.7)) == "3 s ago"
    assert ago(T0 + timedelta(minutes=59, seconds=57.4), T0) == "in 59 min 57 s"
    assert ago(None, T0) == BLANK
    assert age(T0, T0 + timedelta(minutes=7, seconds=2.5)) == "7 min 2 s" and age(None, T0) == BLANK


def test_times_in_utc_and_on_a_zones_wall_clock_across_a_dst_change() -> None:
    paris = ZoneInfo("Europe/Paris")
    assert utc(T0) == "2026-03-29 00:30:00 UTC"
    assert local(T0, paris) == "2026-03-29 01:30:00 CET (+01:00)"
    assert local(T0 + timedelta(hours=1), paris) == "2026-03-29 03:30:00 CEST (+02:00)"
    assert local(T0, ZoneInfo("Asia/Kolkata")) == "2026-03-29 06:00:00 IST (+05:30)"


def test_fire_times_show_seconds_only_when_there_are_any() -> None:
    assert wall(T0) == "2026-03-29 00:30 UTC"
    assert wall(T0 + timedelta(seconds=5), ZoneInfo("Europe/Paris")) == "2026-03-29 01:30:05 CET"
    assert wall(T0 + timedelta(hours=1), ZoneInfo("Europe/Paris"), True) == "2026-03-29 03:30 CEST (+02:00)"
    assert wall(None) == BLANK


def series(*entries: tuple[int, str, State, int]) -> ThroughputSeries:
    since = T0 - timedelta(minutes=59)
    counts = [Throughput(queue=q, start=since + timedelta(minutes=i), state=s, count=n) for i, q, s, n in entries]
    return ThroughputSeries(since=since, bucket=timedelta(minutes=1), buckets=60, counts=counts)


def test_chart_stacks_states_per_bucket_and_scales_to_the_busiest() -> None:
    drawn = chart(series((0, "a", State.SUCCEEDED, 6), (0, "a", State.FAILED, 2), (59, "b", State.SUCCEEDED, 4)),
                  width=600, height=80)
    first_ok, first_failed, last = drawn.bars
    assert (first_ok.x, first_ok.height, first_ok.y) == (0, 60.0, 20.0)
    assert (first_failed.height, first_failed.y) == (20.0, 0.0)  # on top of the successes
    assert last.x == 590 and last.height == 40.0 and last.width == 8.0
    assert drawn.peak == 8 and drawn.totals == {"succeeded": 10, "failed": 2, "cancelled": 0}
    assert first_failed.label == "23:31 UTC: 2 failed" and drawn.since == "23:31"
    assert [b.label for b in chart(series((3, "a", State.CANCELLED, 1)), "b").bars] == []


@example([(5, "a", State.SUCCEEDED, 9998), (5, "a", State.FAILED, 1), (5, "a", State.CANCELLED, 1)])
@given(st.lists(st.tuples(st.integers(0, 59), st.sampled_from("ab"), st.sampled_from(
    [State.SUCCEEDED, State.FAILED, State.CANCELLED]), st.integers(1, 10_000)), max_size=40))
def test_every_bar_fits_in_the_chart(entries: list[tuple[int, str, State, int]]) -> None:
    drawn = chart(series(*entries), width=240, height=40)
    assert drawn.total == sum(n for *_, n in entries)
    for bar in drawn.bars:
        assert bar.x >= 0 and bar.x + bar.width <= 240 and bar.height > 0
        assert bar.y >= 0 and bar.y + bar.height <= 40.01
