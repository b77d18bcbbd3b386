"""The job filter of the dashboard's forms and links: read from a query string or a form, written back into
links (paging, bulk actions) so that a page and its buttons always mean the same jobs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from attrs import frozen

from adapters.http.paging import uuid_filter
from application.ports import JobFilter
from domain.errors import InvalidInput
from domain.job import State

FIELDS = ("state", "queue", "task", "schedule_id")
ANY = "any"  # every state, where a page would otherwise pick one


@frozen
class Filter:
    """The filter as typed (for the form) and as the use cases take it."""

    raw: dict[str, str]
    where: JobFilter

    def query(self, **extra: str | None) -> str:
        """The query string of this filter (plus `extra`), for links; empty fields are left out."""
        pairs = {k: v for k, v in (self.raw | extra).items() if v}
        return "?" + urlencode(pairs) if pairs else ""


def read_filter(values: Mapping[str, Any], *, default_state: str = "") -> Filter:
    """InvalidInput names the field at fault (an unknown state, a schedule id that is no UUID)."""
    raw = {name: _text(values.get(name)) for name in FIELDS}
    if "state" not in values:
        raw["state"] = default_state
    state = "" if raw["state"] == ANY else raw["state"]
    if state and state not in set(State):
        raise InvalidInput({"state": f"must be one of {', '.join(State)}"})
    where = JobFilter(state=State(state) if state else None, queue=raw["queue"] or None, task=raw["task"] or None,
                      schedule_id=uuid_filter(raw["schedule_id"] or None, "schedule_id"))
    return Filter(raw=raw, where=where)


def _text(value: Any) -> str:
    return value.strip()[:200] if isinstance(value, str) else ""
