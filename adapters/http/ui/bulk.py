"""/ui/failed: failed jobs (or any state) for a filter, and retry all / cancel all of them at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Template

from adapters.http.ui.filters import Filter, read_filter
from adapters.http.ui.render import page, redirect
from application.bulk_jobs import CANCELLABLE, RETRYABLE, BulkOutcome, CancelJobs, RetryJobs
from application.manage_jobs import ListJobs

SHOWN: Final = 50
PER_CLICK: Final = 1000  # jobs one button press changes; pressing again takes the next ones


class BulkPages(Controller):
    path = "/failed"

    @get("/")
    async def failed(self, request: Request[Any, Any, Any], list_jobs: NamedDependency[ListJobs],
                     now: NamedDependency[datetime]) -> Template:
        chosen = read_filter(request.query_params, default_state="failed")
        found = await list_jobs(chosen.where, limit=SHOWN, cursor=None)
        state = chosen.where.state
        return page(request, "failed.html", now=now, jobs=found.items, more=found.next_cursor is not None,
                    filter=chosen, per_click=PER_CLICK, can_retry_all=state is None or state in RETRYABLE,
                    can_cancel_all=state is None or state in CANCELLABLE)

    @post("/retry")
    async def retry_all(self, request: Request[Any, Any, Any], retry_jobs: NamedDependency[RetryJobs]) -> Redirect:
        chosen = read_filter(await request.form())
        outcome = await retry_jobs(chosen.where, limit=PER_CLICK)
        return redirect(request, "/ui/failed" + chosen.query(), _summary("Queued again", outcome))

    @post("/cancel")
    async def cancel_all(self, request: Request[Any, Any, Any],
                         cancel_jobs: NamedDependency[CancelJobs]) -> Redirect:
        chosen = read_filter(await request.form())
        outcome = await cancel_jobs(chosen.where, limit=PER_CLICK)
        return redirect(request, "/ui/failed" + _kept(chosen), _summary("Cancelled", outcome))


def _kept(chosen: Filter) -> str:
    # After a cancel-all the page shows what was cancelled, unless the filter named another state.
    return chosen.query() if chosen.where.state is not None else chosen.query(state="cancelled")


def _summary(done: str, outcome: BulkOutcome) -> str:
    text = f"{done} {len(outcome.changed)} job{'s' if len(outcome.changed) != 1 else ''}."
    if outcome.skipped:
        text += f" Skipped {len(outcome.skipped)} (not in a state that allows it, or changed meanwhile)."
    if outcome.more:
        text += f" More jobs match: press again for the next {PER_CLICK}."
    return text
