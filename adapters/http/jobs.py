"""/v1/jobs: submit (one or a batch), read, list, history, cancel, retry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from adapters.http.bodies import BatchBody, JobBody
from adapters.http.paging import Cursor, Limit, decode_cursor, encode_cursor, parse_job_id, uuid_filter
from adapters.http.problems import READS, WRITES
from adapters.http.views import JobIds, JobPage, JobView, RunView
from application.manage_jobs import CancelJob, GetJob, JobRuns, ListJobs, RetryJob
from application.ports import JobFilter
from application.submit_jobs import SubmitJobs
from domain.job import State

Filter = Annotated[str | None, QueryParameter(max_length=1000)]
StateFilter = Annotated[State | None, QueryParameter(name="state")]  # `state` is a reserved name in Litestar


class JobsController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @post("/", status_code=201, responses=WRITES | {
        200: ResponseSpec(JobView, description="The job stored earlier under the same idempotency_key")})
    async def submit(self, data: JSONBody[JobBody], submit_jobs: NamedDependency[SubmitJobs],
                     now: NamedDependency[datetime]) -> Response[JobView]:
        """Submit one job. A repeated idempotency_key answers 200 with the job stored the first time."""
        [submitted] = await submit_jobs([data.to_spec(now)], prefix=None)
        return Response(JobView.of(submitted.job), status_code=201 if submitted.created else 200)

    @post("/batch", status_code=201, responses=WRITES)
    async def submit_batch(self, data: JSONBody[BatchBody], submit_jobs: NamedDependency[SubmitJobs],
                           now: NamedDependency[datetime]) -> JobIds:
        """Submit up to 10,000 jobs, all or nothing."""
        submitted = await submit_jobs(data.to_specs(now))
        return JobIds(ids=[s.job.id for s in submitted])

    @get("/", responses=READS)
    async def list_jobs(self, list_jobs: NamedDependency[ListJobs], job_state: StateFilter = None,
                        queue: Filter = None, task: Filter = None, schedule_id: Filter = None, limit: Limit = 100,
                        cursor: Cursor = None) -> JobPage:
        """Jobs, newest first, keyset-paged."""
        where = JobFilter(state=job_state, queue=queue, task=task, schedule_id=uuid_filter(schedule_id, "schedule_id"))
        page = await list_jobs(where, limit=limit, cursor=decode_cursor(cursor))
        return JobPage(items=[JobView.of(j) for j in page.items], next_cursor=encode_cursor(page.next_cursor))

    @get("/{job_id:str}", responses=READS)
    async def get_job(self, job_id: FromPath[str], get_job: NamedDependency[GetJob]) -> JobView:
        return JobView.of(await get_job(parse_job_id(job_id)))

    @get("/{job_id:str}/runs", responses=READS)
    async def runs(self, job_id: FromPath[str], job_runs: NamedDependency[JobRuns]) -> list[RunView]:
        """Execution history of the job, oldest first."""
        return [RunView.of(r) for r in await job_runs(parse_job_id(job_id))]

    @post("/{job_id:str}/cancel", status_code=200, responses=WRITES)
    async def cancel(self, job_id: FromPath[str], cancel_job: NamedDependency[CancelJob]) -> JobView:
        """Cancel; 409 if the job is already finished."""
        return JobView.of(await cancel_job(parse_job_id(job_id)))

    @post("/{job_id:str}/retry", status_code=200, responses=WRITES)
    async def retry(self, job_id: FromPath[str], retry_job: NamedDependency[RetryJob]) -> JobView:
        """Re-queue a failed or cancelled job; 409 otherwise."""
        return JobView.of(await retry_job(parse_job_id(job_id)))
