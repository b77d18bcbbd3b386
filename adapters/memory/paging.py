"""Keyset paging over ids that sort by creation (UUIDv7): newest first, cursor = last id returned."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from application.ports import Page

T = TypeVar("T")


def keyset_page(items: Iterable[T], key: Callable[[T], str], *, limit: int, cursor: str | None) -> Page[T]:
    ordered = sorted(items, key=key, reverse=True)
    if cursor is not None:
        ordered = [item for item in ordered if key(item) < cursor]
    page = ordered[:limit]
    more = len(ordered) > limit
    return Page(items=page, next_cursor=key(page[-1]) if more and page else None)
