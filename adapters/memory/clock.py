"""Clocks: the real one, and a frozen one that tests move by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from attrs import define


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@define
class FrozenClock:
    at: datetime

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at
