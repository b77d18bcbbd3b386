"""Python clients of the gnomon API (SPEC §4): GnomonClient (blocking, httpx.Client) and AsyncGnomonClient
(asyncio, httpx.AsyncClient), with the same methods.

    with GnomonClient("http://127.0.0.1:8000", token, idempotency_keys=True) as gnomon:
        job = gnomon.submit("send_email", {"to": "ada@example.com"}, queue="mail", delay_seconds=60)
        gnomon.get_job(job["id"])["state"]

Answers are TypedDicts of the JSON (client_types.py). An error answer raises GnomonError(status, problem);
no answer at all, after the retries, raises Unreachable (status 0). A try that could not connect, or got 503,
is sent again with backoff; one cut off after sending only when repeating it is harmless (reads, updates,
submits carrying an idempotency key). With `idempotency_keys=True`, every submitted job without a key gets a
random one, so that a submit sent again is stored once.

The two classes are thin twins on purpose: what a call sends and how its answer is read is written once, in
client_routes.py; only the waiting differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx

from adapters.http import client_routes as routes
from adapters.http.client_routes import Call, GnomonError, Retry, Unreachable, new_idempotency_key
from adapters.http.client_types import (
    FireTime,
    Health,
    Instant,
    JobFilters,
    JobInfo,
    JobOptions,
    JobRequest,
    JobTemplate,
    OccurrenceInfo,
    Page,
    QueueInfo,
    RunInfo,
    ScheduleInfo,
    ScheduleOptions,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncGnomonClient", "GnomonClient", "GnomonError", "Retry", "Unreachable"]

T = TypeVar("T")
DEFAULT_URL: Final = "http://127.0.0.1:8000"
RETRY: Final = Retry()


class _Options:
    def __init__(self, token: str | None, retry: Retry, idempotency_keys: bool) -> None:
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retry = retry
        self.auto_keys = idempotency_keys

    def job(self, task: str, payload: Mapping[str, Any] | None, options: JobOptions) -> JobRequest:
        return self.keyed({"task": task, "payload": dict(payload or {}), **options})

    def keyed(self, job: JobRequest) -> JobRequest:
        if self.auto_keys and not job.get("idempotency_key"):
            return {**job, "idempotency_key": new_idempotency_key()}
        return job


def _unreachable(call: Call[Any], exc: Exception) -> Unreachable:
    return Unreachable(f"{call.method} {call.path}: {type(exc).__name__}: {exc}".rstrip(": "))


class GnomonClient:
    """The API from blocking code; a context manager (or call close())."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 30.0,
                 retry: Retry = RETRY, idempotency_keys: bool = False,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._options = _Options(token, retry, idempotency_keys)
        self._http = httpx.Client(base_url=url, headers=self._options.headers, timeout=timeout, transport=transport)

    def __enter__(self) -> GnomonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: Call[T]) -> T:
        tried = 0
        while True:
            tried += 1
            try:
                response = self._http.request(call.method, call.path, params=call.params, json=call.body)
            except httpx.TransportError as exc:
                if (wait := self._options.retry.pause(tried, call, error=exc)) is None:
                    raise _unreachable(call, exc) from exc
            else:
                if (wait := self._options.retry.pause(tried, call, response=response)) is None:
                    return call.result(response)
            time.sleep(wait)

    def health(self) -> Health:
        return self._do(routes.health("healthz"))

    def ready(self) -> Health:
        return self._do(routes.health("readyz"))

    def submit(self, task: str, payload: Mapping[str, Any] | None = None, **options: Unpack[JobOptions]) -> JobInfo:
        return self._do(routes.submit(self._options.job(task, payload, options)))

    def submit_batch(self, jobs: Sequence[JobRequest]) -> list[str]:
        """Up to 10,000 jobs, all or nothing; their ids in order."""
        return self._do(routes.submit_batch([self._options.keyed(job) for job in jobs]))

    def get_job(self, job_id: str) -> JobInfo:
        return self._do(routes.get_job(job_id))

    def list_jobs(self, **filters: Unpack[JobFilters]) -> Page[JobInfo]:
        return self._do(routes.list_jobs(filters))

    def iter_jobs(self, **filters: Unpack[JobFilters]) -> Iterator[JobInfo]:
        """Every job matching the filters, newest first, page after page."""
        while True:
            page = self.list_jobs(**filters)
            yield from page["items"]
            if page["next_cursor"] is None:
                return
            filters["cursor"] = page["next_cursor"]

    def job_runs(self, job_id: str) -> list[RunInfo]:
        return self._do(routes.job_runs(job_id))

    def cancel_job(self, job_id: str) -> JobInfo:
        return self._do(routes.cancel_job(job_id))

    def retry_job(self, job_id: str) -> JobInfo:
        return self._do(routes.retry_job(job_id))

    def create_schedule(self, name: str, job: JobTemplate, **options: Unpack[ScheduleOptions]) -> ScheduleInfo:
        return self._do(routes.create_schedule(name, job, options))

    def list_schedules(self, *, limit: int | None = None, cursor: str | None = None) -> Page[ScheduleInfo]:
        return self._do(routes.list_schedules(limit, cursor))

    def get_schedule(self, key: str) -> ScheduleInfo:
        return self._do(routes.get_schedule(key))

    def update_schedule(self, key: str, changes: Mapping[str, Any]) -> ScheduleInfo:
        return self._do(routes.update_schedule(key, changes))

    def delete_schedule(self, key: str) -> None:
        return self._do(routes.delete_schedule(key))

    def pause_schedule(self, key: str, *, note: str | None = None, until: Instant | None = None) -> ScheduleInfo:
        return self._do(routes.pause_schedule(key, note, until))

    def resume_schedule(self, key: str) -> ScheduleInfo:
        return self._do(routes.resume_schedule(key))

    def trigger_schedule(self, key: str) -> JobInfo:
        return self._do(routes.trigger_schedule(key))

    def preview_schedule(self, key: str, count: int = 10) -> list[FireTime]:
        return self._do(routes.preview_schedule(key, count))

    def schedule_occurrences(self, key: str, *, limit: int | None = None,
                             cursor: str | None = None) -> Page[OccurrenceInfo]:
        return self._do(routes.schedule_occurrences(key, limit, cursor))

    def backfill_schedule(self, key: str, start: Instant, end: Instant) -> list[str]:
        return self._do(routes.backfill_schedule(key, start, end))

    def list_queues(self) -> list[QueueInfo]:
        return self._do(routes.list_queues())


class AsyncGnomonClient:
    """The API from asyncio code, method for method as GnomonClient; `async with` (or await aclose())."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 30.0,
                 retry: Retry = RETRY, idempotency_keys: bool = False,
                 transport: httpx.AsyncBaseTransport | None = None, max_connections: int = 100) -> None:
        self._options = _Options(token, retry, idempotency_keys)
        self._http = httpx.AsyncClient(base_url=url, headers=self._options.headers, timeout=timeout,
                                       transport=transport, limits=httpx.Limits(max_connections=max_connections))

    async def __aenter__(self) -> AsyncGnomonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, call: Call[T]) -> T:
        tried = 0
        while True:
            tried += 1
            try:
                response = await self._http.request(call.method, call.path, params=call.params, json=call.body)
            except httpx.TransportError as exc:
                if (wait := self._options.retry.pause(tried, call, error=exc)) is None:
                    raise _unreachable(call, exc) from exc
            else:
                if (wait := self._options.retry.pause(tried, call, response=response)) is None:
                    return call.result(response)
            await asyncio.sleep(wait)

    async def health(self) -> Health:
        return await self._do(routes.health("healthz"))

    async def ready(self) -> Health:
        return await self._do(routes.health("readyz"))

    async def submit(self, task: str, payload: Mapping[str, Any] | None = None,
                     **options: Unpack[JobOptions]) -> JobInfo:
        return await self._do(routes.submit(self._options.job(task, payload, options)))

    async def submit_batch(self, jobs: Sequence[JobRequest]) -> list[str]:
        return await self._do(routes.submit_batch([self._options.keyed(job) for job in jobs]))

    async def get_job(self, job_id: str) -> JobInfo:
        return await self._do(routes.get_job(job_id))

    async def list_jobs(self, **filters: Unpack[JobFilters]) -> Page[JobInfo]:
        return await self._do(routes.list_jobs(filters))

    async def iter_jobs(self, **filters: Unpack[JobFilters]) -> AsyncIterator[JobInfo]:
        while True:
            page = await self.list_jobs(**filters)
            for job in page["items"]:
                yield job
            if page["next_cursor"] is None:
                return
            filters["cursor"] = page["next_cursor"]

    async def job_runs(self, job_id: str) -> list[RunInfo]:
        return await self._do(routes.job_runs(job_id))

    async def cancel_job(self, job_id: str) -> JobInfo:
        return await self._do(routes.cancel_job(job_id))

    async def retry_job(self, job_id: str) -> JobInfo:
        return await self._do(routes.retry_job(job_id))

    async def create_schedule(self, name: str, job: JobTemplate,
                              **options: Unpack[ScheduleOptions]) -> ScheduleInfo:
        return await self._do(routes.create_schedule(name, job, options))

    async def list_schedules(self, *, limit: int | None = None, cursor: str | None = None) -> Page[ScheduleInfo]:
        return await self._do(routes.list_schedules(limit, cursor))

    async def get_schedule(self, key: str) -> ScheduleInfo:
        return await self._do(routes.get_schedule(key))

    async def update_schedule(self, key: str, changes: Mapping[str, Any]) -> ScheduleInfo:
        return await self._do(routes.update_schedule(key, changes))

    async def delete_schedule(self, key: str) -> None:
        return await self._do(routes.delete_schedule(key))

    async def pause_schedule(self, key: str, *, note: str | None = None,
                             until: Instant | None = None) -> ScheduleInfo:
        return await self._do(routes.pause_schedule(key, note, until))

    async def resume_schedule(self, key: str) -> ScheduleInfo:
        return await self._do(routes.resume_schedule(key))

    async def trigger_schedule(self, key: str) -> JobInfo:
        return await self._do(routes.trigger_schedule(key))

    async def preview_schedule(self, key: str, count: int = 10) -> list[FireTime]:
        return await self._do(routes.preview_schedule(key, count))

    async def schedule_occurrences(self, key: str, *, limit: int | None = None,
                                   cursor: str | None = None) -> Page[OccurrenceInfo]:
        return await self._do(routes.schedule_occurrences(key, limit, cursor))

    async def backfill_schedule(self, key: str, start: Instant, end: Instant) -> list[str]:
        return await self._do(routes.backfill_schedule(key, start, end))

    async def list_queues(self) -> list[QueueInfo]:
        return await self._do(routes.list_queues())
