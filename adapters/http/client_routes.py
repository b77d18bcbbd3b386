"""The client's side of the API (SPEC §4) without I/O: the request each route makes and how its answer is read
(as the TypedDicts of client_types.py), how an error answer becomes a GnomonError and when a failed try is
sent again.

`client.py` runs these calls: GnomonClient with httpx.Client, AsyncGnomonClient with httpx.AsyncClient.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Generic, Literal, TypeVar, cast
from urllib.parse import quote

import httpx
from attrs import frozen

from adapters.http.client_types import (
    FireTime,
    Health,
    Instant,
    JobFilters,
    JobInfo,
    JobRequest,
    JobTemplate,
    OccurrenceInfo,
    Page,
    Problem,
    QueueInfo,
    RunInfo,
    ScheduleInfo,
    ScheduleOptions,
)

T = TypeVar("T")


class GnomonError(Exception):
    """The API answered with an error (status >= 400), described by its problem document."""

    def __init__(self, status: int, problem: Problem) -> None:
        self.status = status
        self.problem = problem
        fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors", []))
        detail = problem.get("detail") or problem.get("title") or "error"
        super().__init__(f"{status} {detail}" if not fields or fields in detail else f"{status} {detail} ({fields})")

    @classmethod
    def of(cls, response: httpx.Response) -> GnomonError:
        try:
            found = response.json()
        except (ValueError, UnicodeDecodeError):
            found = None
        if not isinstance(found, dict):
            found = {"title": response.reason_phrase, "detail": response.text[:500] or response.reason_phrase}
        return cls(response.status_code, cast(Problem, found))


class Unreachable(GnomonError):
    """No answer at all (connection refused, timed out, cut) after every retry; status 0."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, {"title": "unreachable", "detail": reason})
        self.args = (f"cannot reach the API: {reason}",)


@frozen
class Call(Generic[T]):
    """One request and how to read its answer. `safe`: sending it twice does no harm, so a try that failed
    after the request may have left (a cut connection, a read timeout) can be sent again."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    body: Any = None
    safe: bool = False
    answers: tuple[int, ...] = ()  # error statuses that are an answer here, read like a success

    def result(self, response: httpx.Response) -> T:
        if response.status_code >= 400 and response.status_code not in self.answers:
            raise GnomonError.of(response)
        return self.read(response)


@frozen
class Retry:
    """Tries after the first one, waiting `first` seconds, doubling up to `most` (or the server's Retry-After)."""

    retries: int = 4
    first: float = 0.2
    most: float = 5.0

    def pause(self, tried: int, call: Call[Any], *, error: Exception | None = None,
              response: httpx.Response | None = None) -> float | None:
        """Seconds to wait before trying `call` again after try number `tried` (from 1), or None: give up."""
        if tried > self.retries:
            return None
        wait = min(self.first * 2 ** (tried - 1), self.most)
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return wait  # the request never left: always safe to send again
        if isinstance(error, httpx.TransportError):
            return wait if call.safe else None
        if response is not None and response.status_code == 503 and 503 not in call.answers:
            # the storage was unavailable: nothing was stored, and the server says when to come back
            return _retry_after(response, wait, self.most)
        return None


def _retry_after(response: httpx.Response, wait: float, most: float) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", wait)), 0.0), most)
    except ValueError:
        return wait


def _json(response: httpx.Response) -> Any:
    return response.json()


def _nothing(response: httpx.Response) -> None:
    return None


def _ids(response: httpx.Response) -> list[str]:
    return cast(list[str], response.json()["ids"])


def new_idempotency_key() -> str:
    return f"auto-{uuid.uuid4()}"


def _text(value: Instant) -> str:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(f"{value!r} has no time zone; give an aware datetime")
        return value.isoformat()
    return value


INSTANTS: Final = ("run_at", "start_at", "end_at", "until", "start", "end")


def body(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body: fields given as None are left out, datetimes become RFC 3339."""
    return {k: (_text(v) if k in INSTANTS else v) for k, v in fields.items() if v is not None}


def _key(key: str) -> str:
    return quote(key, safe="")


# -- the routes of SPEC §4 -------------------------------------------------------------------------------------

def submit(job: JobRequest) -> Call[JobInfo]:
    return Call("POST", "/v1/jobs", _json, body=body(job), safe=bool(job.get("idempotency_key")))


def submit_batch(jobs: Sequence[JobRequest]) -> Call[list[str]]:
    safe = all(job.get("idempotency_key") for job in jobs)
    return Call("POST", "/v1/jobs/batch", _ids, body={"jobs": [body(job) for job in jobs]}, safe=safe)


def get_job(job_id: str) -> Call[JobInfo]:
    return Call("GET", f"/v1/jobs/{_key(job_id)}", _json, safe=True)


def list_jobs(filters: JobFilters) -> Call[Page[JobInfo]]:
    return Call("GET", "/v1/jobs", _json, params=body(filters), safe=True)


def job_runs(job_id: str) -> Call[list[RunInfo]]:
    return Call("GET", f"/v1/jobs/{_key(job_id)}/runs", _json, safe=True)


def cancel_job(job_id: str) -> Call[JobInfo]:
    return Call("POST", f"/v1/jobs/{_key(job_id)}/cancel", _json)


def retry_job(job_id: str) -> Call[JobInfo]:
    return Call("POST", f"/v1/jobs/{_key(job_id)}/retry", _json)


def create_schedule(name: str, job: JobTemplate, options: ScheduleOptions) -> Call[ScheduleInfo]:
    return Call("POST", "/v1/schedules", _json, body=body({"name": name, "job": job, **options}))


def list_schedules(limit: int | None, cursor: str | None) -> Call[Page[ScheduleInfo]]:
    return Call("GET", "/v1/schedules", _json, params=body({"limit": limit, "cursor": cursor}), safe=True)


def get_schedule(key: str) -> Call[ScheduleInfo]:
    return Call("GET", f"/v1/schedules/{_key(key)}", _json, safe=True)


def update_schedule(key: str, changes: Mapping[str, Any]) -> Call[ScheduleInfo]:
    fields = {k: (_text(v) if k in INSTANTS and v is not None else v) for k, v in changes.items()}
    return Call("PATCH", f"/v1/schedules/{_key(key)}", _json, body=fields, safe=True)


def delete_schedule(key: str) -> Call[None]:
    return Call("DELETE", f"/v1/schedules/{_key(key)}", _nothing)


def pause_schedule(key: str, note: str | None, until: Instant | None) -> Call[ScheduleInfo]:
    return Call("POST", f"/v1/schedules/{_key(key)}/pause", _json, body=body({"note": note, "until": until}))


def resume_schedule(key: str) -> Call[ScheduleInfo]:
    return Call("POST", f"/v1/schedules/{_key(key)}/resume", _json)


def trigger_schedule(key: str) -> Call[JobInfo]:
    return Call("POST", f"/v1/schedules/{_key(key)}/trigger", _json)


def preview_schedule(key: str, count: int) -> Call[list[FireTime]]:
    return Call("GET", f"/v1/schedules/{_key(key)}/preview", _json, params={"count": count}, safe=True)


def schedule_occurrences(key: str, limit: int | None, cursor: str | None) -> Call[Page[OccurrenceInfo]]:
    return Call("GET", f"/v1/schedules/{_key(key)}/occurrences", _json,
                params=body({"limit": limit, "cursor": cursor}), safe=True)


def backfill_schedule(key: str, start: Instant, end: Instant) -> Call[list[str]]:
    # Safe: a backfill fires only the occurrences of the range that have no job yet.
    return Call("POST", f"/v1/schedules/{_key(key)}/backfill", _ids, body=body({"start": start, "end": end}),
                safe=True)


def list_queues() -> Call[list[QueueInfo]]:
    return Call("GET", "/v1/queues", lambda r: cast(list[QueueInfo], r.json()["items"]), safe=True)


def health(probe: Literal["healthz", "readyz"]) -> Call[Health]:
    """Liveness or readiness; a 503 from /readyz is an answer, not an error."""
    return Call("GET", f"/{probe}", _json, safe=True, answers=(503,))
