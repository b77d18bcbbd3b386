"""Retry backoff: exponential, capped, with optional jitter that is stable per (job, attempt)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Final

from attrs import field, frozen, validators

from domain.errors import InvalidInput


def _digest(parts: tuple[object, ...]) -> int:
    """64 bits that depend only on `parts`."""
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) that depends only on `parts`: deterministic jitter without a random source."""
    return (_digest(parts) >> 11) / 2**53  # 53 bits fit a float exactly; 64 could round up to 1.0


def unit_below(n: int, *parts: object) -> int:
    """An integer in [0, n) that depends only on `parts` (exact: no float rounding up to n)."""
    return _digest(parts) * n >> 64


MAX_DELAY_SECONDS: Final = 366 * 86400  # bounds keep every delay a finite timedelta that a run_at can carry
MAX_FACTOR: Final = 1000


@frozen(kw_only=True)
class Backoff:
    """delay(n) = min(base * factor**(n-1), max); jitter keeps it in [delay/2, delay] ("equal jitter")."""

    base_seconds: float = field(default=1.0, validator=[validators.ge(0), validators.le(MAX_DELAY_SECONDS)])
    factor: float = field(default=2.0, validator=[validators.ge(1), validators.le(MAX_FACTOR)])
    max_seconds: float = field(default=3600.0, validator=[validators.ge(0), validators.le(MAX_DELAY_SECONDS)])
    jitter: bool = True

    @classmethod
    def parse(cls, raw: dict[str, object] | None, where: str = "backoff") -> Backoff:
        try:
            return cls(**(raw or {}))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise InvalidInput({where: str(exc)}) from exc

    def ceiling(self, attempt: int) -> float:
        """The delay before retry number `attempt` (1-based) without jitter."""
        exponent = max(attempt - 1, 0)
        if self.base_seconds == 0:  # not 0 * inf once factor**exponent overflows
            return 0.0
        try:
            raw = self.base_seconds * float(self.factor) ** exponent
        except OverflowError:
            raw = float("inf")
        return min(raw, self.max_seconds)

    def delay(self, attempt: int, *, seed: str) -> timedelta:
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return timedelta(seconds=ceiling)
        return timedelta(seconds=ceiling / 2 + unit_hash(seed, attempt) * ceiling / 2)

    def as_dict(self) -> dict[str, object]:
        return {"base_seconds": self.base_seconds, "factor": self.factor,
                "max_seconds": self.max_seconds, "jitter": self.jitter}
