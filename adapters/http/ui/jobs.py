"""/ui/jobs: the job list (filters, keyset paging, search by id), one job with its runs, cancel and retry."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from adapters.http.paging import decode_cursor, encode_cursor, parse_job_id
from adapters.http.ui.filters import read_filter
from adapters.http.ui.render import page, redirect
from application.manage_jobs import CancelJob, GetJob, JobRuns, ListJobs, RetryJob

PAGE_SIZE: Final = 50


class JobPages(Controller):
    path = "/jobs"

    @get("/")
    async def list_jobs(self, request: Request[Any, Any, Any], list_jobs: NamedDependency[ListJobs],
                        now: NamedDependency[datetime]) -> Response[Any]:
        """Newest first; `id` jumps to one job."""
        query = request.query_params
        if wanted := (query.get("id") or "").strip():
            try:
                return Redirect(path=f"/ui/jobs/{uuid.UUID(wanted)}", status_code=303)
            except ValueError:
                return redirect(request, "/ui/jobs", f"{wanted[:80]!r} is not a job id (a UUID)", ok=False)
        chosen = read_filter(query)
        cursor = query.get("cursor") or None
        found = await list_jobs(chosen.where, limit=PAGE_SIZE, cursor=decode_cursor(cursor))
        return page(request, "jobs.html", now=now, jobs=found.items, filter=chosen, cursor=cursor,
                    next_page=chosen.query(cursor=encode_cursor(found.next_cursor)) if found.next_cursor else None)

    @get("/{job_id:str}")
    async def job(self, request: Request[Any, Any, Any], job_id: FromPath[str], get_job: NamedDependency[GetJob],
                  job_runs: NamedDependency[JobRuns], now: NamedDependency[datetime]) -> Template:
        found = await get_job(parse_job_id(job_id))
        return page(request, "job.html", now=now, job=found, runs=await job_runs(found.id))

    @post("/{job_id:str}/cancel")
    async def cancel(self, request: Request[Any, Any, Any], job_id: FromPath[str],
                     cancel_job: NamedDependency[CancelJob]) -> Redirect:
        job = await cancel_job(parse_job_id(job_id))
        return redirect(request, f"/ui/jobs/{job.id}", "Job cancelled.")

    @post("/{job_id:str}/retry")
    async def retry(self, request: Request[Any, Any, Any], job_id: FromPath[str],
                    retry_job: NamedDependency[RetryJob]) -> Redirect:
        job = await retry_job(parse_job_id(job_id))
        return redirect(request, f"/ui/jobs/{job.id}", "Job queued again.")
