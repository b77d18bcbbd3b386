"""New identifiers for jobs and schedules: UUIDv7 from the caller's clock and the OS's randomness."""

from __future__ import annotations

import secrets
from datetime import datetime

from domain.ids import uuid7, uuid7_many


def new_id(now: datetime) -> str:
    return uuid7(now, secrets.token_bytes(10))


def new_ids(now: datetime, count: int) -> list[str]:
    """`count` new ids at once: one read of the OS's randomness for all of them."""
    return uuid7_many(now, secrets.token_bytes(10 * count))
