"""Throughput charts as plain numbers for an inline SVG: one stacked bar per bucket (succeeded at the bottom,
then failed, then cancelled), scaled to the busiest bucket. No script and no chart library."""

from __future__ import annotations

from typing import Final

from attrs import frozen

from application.throughput import ThroughputSeries

STACK: Final = ("succeeded", "failed", "cancelled")  # bottom to top
GAP: Final = 0.2  # share of a slot left empty between bars


@frozen
class Bar:
    x: float
    y: float
    width: float
    height: float
    state: str
    label: str  # the bar's tooltip


@frozen
class Chart:
    width: int
    height: int
    bars: list[Bar]
    peak: int  # the busiest bucket's count: the top of the scale
    totals: dict[str, int]  # per state, over the window
    since: str  # HH:MM UTC of the first bucket

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def chart(series: ThroughputSeries, queue: str | None = None, *, width: int = 240, height: int = 40) -> Chart:
    """The chart of one queue, or of all of them when `queue` is None."""
    counts = _stacks(series, queue)
    peak = max((sum(stack) for stack in counts), default=0)
    slot = width / series.buckets
    bars: list[Bar] = []
    for i, stack in enumerate(counts):
        start = series.since + i * series.bucket
        below = float(height)
        for state, n in zip(STACK, stack, strict=True):
            # at least a pixel, so that a lone failure among thousands shows; never above the frame
            top = max(below - max(n / peak * height, 1.0), 0.0) if n else below
            if below - top > 0:
                bars.append(Bar(x=round(i * slot, 2), y=round(top, 2), width=round(slot * (1 - GAP), 2),
                                height=round(below - top, 2), state=state, label=f"{start:%H:%M} UTC: {n} {state}"))
            below = top
    totals = {state: sum(stack[k] for stack in counts) for k, state in enumerate(STACK)}
    return Chart(width=width, height=height, bars=bars, peak=peak, totals=totals, since=f"{series.since:%H:%M}")


def _stacks(series: ThroughputSeries, queue: str | None) -> list[list[int]]:
    counts = [[0] * len(STACK) for _ in range(series.buckets)]
    for entry in series.counts:
        index = series.index(entry)
        if (queue is None or entry.queue == queue) and 0 <= index < series.buckets:
            counts[index][STACK.index(str(entry.state))] += entry.count
    return counts
