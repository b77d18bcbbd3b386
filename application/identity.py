"""New identifiers for jobs and schedules: UUIDv7 from the caller's clock and the OS's randomness."""

from __future__ import annotations

import secrets
from datetime import datetime

from domain.ids import uuid7


def new_id(now: datetime) -> str:
    return uuid7(now, secrets.token_bytes(10))
