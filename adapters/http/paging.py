"""Query parameters shared by the list routes, and the opaque cursor codec.

Repositories page by whatever key suits them (a job id, a ledger row number); the API hands that key out
wrapped, so a client cannot forge one by accident and a mangled cursor is a 422 here instead of a
driver error (a uuid cast, say) deeper down.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated, Final

from litestar.params import QueryParameter

from domain.errors import InvalidInput, JobNotFound

_TAG: Final = "g1:"

Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="page size, 1 to 1000")]
Cursor = Annotated[str | None, QueryParameter(max_length=1000,
                                         description="next_cursor of the previous page")]


def encode_cursor(key: str | None) -> str | None:
    if key is None:
        return None
    return base64.urlsafe_b64encode((_TAG + key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_TAG) or not text[len(_TAG):].isprintable() or len(text) == len(_TAG):
        raise InvalidInput({"cursor": "is not a cursor this API returned"})
    return text[len(_TAG):]


def parse_job_id(raw: str) -> str:
    """Job ids are UUIDs; anything else names no job (404), and never reaches a uuid column."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise JobNotFound(raw) from None


def uuid_filter(raw: str | None, field: str) -> str | None:
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidInput({field: "must be a UUID"}) from None
