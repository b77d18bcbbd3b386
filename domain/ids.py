"""Time-ordered identifiers (UUIDv7, RFC 9562): sortable by creation, so keyset paging is by id."""

from __future__ import annotations

from datetime import datetime


def uuid7(at: datetime, entropy: bytes) -> str:
    """A UUIDv7 string from a creation instant and 10 random bytes supplied by the caller."""
    if len(entropy) < 10:
        raise ValueError("uuid7 needs 10 bytes of entropy")
    return _format(_millis(at), entropy[:10])


def uuid7_many(at: datetime, entropy: bytes) -> list[str]:
    """One UUIDv7 string per 10 bytes of `entropy`, all created at `at` (the instant is read once)."""
    if len(entropy) % 10:
        raise ValueError("uuid7_many needs 10 bytes of entropy per id")
    ms = _millis(at)
    return [_format(ms, entropy[i:i + 10]) for i in range(0, len(entropy), 10)]


def _millis(at: datetime) -> int:
    return int(at.timestamp() * 1000) & ((1 << 48) - 1)


def _format(ms: int, entropy: bytes) -> str:
    # Laid out byte by byte rather than through an int, uuid.UUID(int=...) and str(), which cost twice as much:
    # 48 bits of milliseconds, version 7 and 12 random bits, variant 0b10 and 62 random bits (of the 80 given,
    # the 6 after the first 12 are left out).
    e = entropy
    h = (ms.to_bytes(6, "big") + bytes((0x70 | e[0] >> 4, (e[0] & 0xF) << 4 | e[1] >> 4, 0x80 | e[2] & 0x3F))
         + e[3:10]).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
