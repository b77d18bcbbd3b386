"""Act on many jobs at once: retry or cancel the jobs matching a filter, up to a limit (the dashboard's bulk
actions). Each job goes through its own domain transition, as with one job; the writes reach the repository as
one batch, so a thousand jobs cost a few statements, not a thousand round trips."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

from attrs import evolve, frozen

from application.manage_jobs import after_cancels
from application.ports import NO_METRICS, Cancellations, Clock, Dispatcher, Finished, JobFilter, JobRepository, Metrics
from application.submit_jobs import dispatch
from domain.errors import IllegalTransition, InvalidInput
from domain.job import NEXT, TERMINAL, Job, State

MAX_BULK: Final = 10_000
PAGE: Final = 500
# Derived from the transition table: the states a manual retry leaves, and those a cancel leaves.
RETRYABLE: Final = tuple(s for s in State if s in TERMINAL and State.QUEUED in NEXT.get(s, ()))
CANCELLABLE: Final = tuple(s for s in State if State.CANCELLED in NEXT.get(s, ()))


@frozen(kw_only=True)
class BulkOutcome:
    changed: list[Job]
    skipped: list[str]  # matched, but the transition refused them or they changed meanwhile
    more: bool  # further jobs match beyond the limit


@frozen
class RetryJobs:
    jobs: JobRepository
    dispatcher: Dispatcher
    clock: Clock

    async def __call__(self, where: JobFilter, *, limit: int) -> BulkOutcome:
        """Re-queue up to `limit` jobs matching `where`, newest first (failed and cancelled ones when `where`
        names no state); the others are skipped."""
        found, more = await matching(self.jobs, where, RETRYABLE, limit)
        now = self.clock.now()
        changes, refused = _transition(found, lambda job: Finished(job=job.retry_now(now=now), run=None))
        changed, stale, woken = await _save(self.jobs, changes)
        await dispatch(self.dispatcher, [c.job for c in changed] + woken)
        return BulkOutcome(changed=[c.job for c in changed], skipped=refused + stale, more=more)


@frozen
class CancelJobs:
    """Cancel many jobs; the workers running some of them are told at once, and held jobs the cancels make room
    for are dispatched, as CancelJob does."""

    jobs: JobRepository
    clock: Clock
    cancellations: Cancellations | None = None
    dispatcher: Dispatcher | None = None
    metrics: Metrics = NO_METRICS

    async def __call__(self, where: JobFilter, *, limit: int) -> BulkOutcome:
        """Cancel up to `limit` jobs matching `where`, newest first (every unfinished one when `where` names no
        state); the others are skipped."""
        found, more = await matching(self.jobs, where, CANCELLABLE, limit)
        now = self.clock.now()
        changes, refused = _transition(found, lambda job: _cancelled(job, now))
        changed, stale, woken = await _save(self.jobs, changes)
        await after_cancels(changed, woken, dispatcher=self.dispatcher, cancellations=self.cancellations,
                            metrics=self.metrics)
        return BulkOutcome(changed=[c.job for c in changed], skipped=refused + stale, more=more)


async def matching(jobs: JobRepository, where: JobFilter, states: Sequence[State],
                   limit: int) -> tuple[list[Job], bool]:
    """Up to `limit` jobs matching `where` (in any of `states` when it names none), and whether more match."""
    if not 1 <= limit <= MAX_BULK:
        raise InvalidInput({"limit": f"must be between 1 and {MAX_BULK}"})
    found: list[Job] = []
    for state in [where.state] if where.state is not None else states:
        cursor = None
        while len(found) <= limit:
            page = await jobs.list(evolve(where, state=state), limit=min(limit + 1 - len(found), PAGE),
                                   cursor=cursor)
            found += page.items
            if (cursor := page.next_cursor) is None:
                break
    return found[:limit], len(found) > limit


def _cancelled(job: Job, now: datetime) -> Finished:
    cancelled, run = job.cancel(now=now)
    return Finished(job=cancelled, run=run)


def _transition(found: list[Job], step: Callable[[Job], Finished]) -> tuple[list[Finished], list[str]]:
    changes: list[Finished] = []
    refused: list[str] = []
    for job in found:
        try:
            changes.append(step(job))
        except IllegalTransition:
            refused.append(job.id)
    return changes, refused


async def _save(jobs: JobRepository, changes: list[Finished]) -> tuple[list[Finished], list[str], list[Job]]:
    """Written changes, ids refused, and held jobs woken by the writes."""
    if not changes:
        return [], [], []
    recorded = await jobs.save_many(changes)
    stale = set(recorded.refused)
    return ([c for c in changes if c.job.id not in stale], [c.job.id for c in changes if c.job.id in stale],
            recorded.woken)
