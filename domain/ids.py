"""Time-ordered identifiers (UUIDv7, RFC 9562): sortable by creation, so keyset paging is by id."""

from __future__ import annotations

import uuid
from datetime import datetime


def uuid7(at: datetime, entropy: bytes) -> str:
    """A UUIDv7 string from a creation instant and 10 random bytes supplied by the caller."""
    if len(entropy) < 10:
        raise ValueError("uuid7 needs 10 bytes of entropy")
    ms = int(at.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(entropy[:10], "big")
    rand_a = rand >> 68 & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))
