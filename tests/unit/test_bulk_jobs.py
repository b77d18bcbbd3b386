"""Bulk retry and cancel (RetryJobs, CancelJobs) and the throughput series, on the memory adapters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.cancellations import InMemoryCancellations
from adapters.memory.clock import FrozenClock
from adapters.memory.dispatcher import InMemoryDispatcher
from adapters.memory.jobs import InMemoryJobRepository
from application.bulk_jobs import CANCELLABLE, RETRYABLE, CancelJobs, RetryJobs
from application.identity import new_id
from application.ports import Finished, JobFilter, Recorded
from application.throughput import QueueThroughput
from domain.errors import InvalidInput
from domain.job import Job, JobSpec, State

T0 = datetime(2026, 11, 2, 12, 0, 30, tzinfo=UTC)


def job(now: datetime = T0, **spec: object) -> Job:
    return Job.create(new_id(now), JobSpec(**{"task": "noop"} | spec), now=now)  # type: ignore[arg-type]


def failed(store: InMemoryJobRepository, now: datetime = T0, **spec: object) -> Job:
    [started] = [job(now, max_attempts=1, **spec).start(worker_id="w", now=now, lease_seconds=30)]
    store.add_now([started])
    done, run = started.fail(token=started.version, now=now, error="boom")
    store.save_now(done, run)
    return done


def cancelled(store: InMemoryJobRepository, **spec: object) -> Job:
    new = job(**spec)
    store.add_now([new])
    done, _ = new.cancel(now=T0)
    store.save_now(done)
    return done


def test_the_state_sets_follow_the_transition_table() -> None:
    assert RETRYABLE == (State.FAILED, State.CANCELLED)
    assert set(CANCELLABLE) == {State.SCHEDULED, State.QUEUED, State.RUNNING, State.RETRY}


async def test_retry_jobs_requeues_and_dispatches_matching_failed_jobs_only() -> None:
    store, dispatcher = InMemoryJobRepository(), InMemoryDispatcher()
    mail = [failed(store, queue="mail") for _ in range(3)]
    other = failed(store, queue="other")
    gone = cancelled(store, queue="mail")
    store.add_now([job(queue="mail")])  # queued: not retryable, not listed
    out = await RetryJobs(store, dispatcher, FrozenClock(T0))(JobFilter(queue="mail"), limit=100)
    assert {j.id for j in out.changed} == {j.id for j in [*mail, gone]} and out.skipped == [] and not out.more
    assert all(store.rows[j.id].state is State.QUEUED for j in [*mail, gone])
    assert store.rows[other.id].state is State.FAILED
    assert await dispatcher.size("mail") == 4 and await dispatcher.size("other") == 0


async def test_retry_jobs_stops_at_the_limit_and_says_more_match() -> None:
    store = InMemoryJobRepository()
    made = [failed(store, T0 + timedelta(milliseconds=i)) for i in range(7)]
    first = await RetryJobs(store, InMemoryDispatcher(), FrozenClock(T0))(JobFilter(), limit=5)
    assert [j.id for j in first.changed] == [j.id for j in reversed(made)][:5] and first.more
    rest = await RetryJobs(store, InMemoryDispatcher(), FrozenClock(T0))(JobFilter(), limit=5)
    assert len(rest.changed) == 2 and not rest.more


async def test_a_state_the_transition_refuses_is_skipped_not_forced() -> None:
    store = InMemoryJobRepository()
    queued = job()
    store.add_now([queued])
    out = await RetryJobs(store, InMemoryDispatcher(), FrozenClock(T0))(JobFilter(state=State.QUEUED), limit=10)
    assert out.changed == [] and out.skipped == [queued.id]
    assert store.rows[queued.id] == queued


async def test_cancel_jobs_cancels_unfinished_jobs_and_tells_workers_of_running_ones() -> None:
    store, cancellations = InMemoryJobRepository(), InMemoryCancellations()
    waiting, later = job(), job(run_at=T0 + timedelta(hours=1))
    started = job().start(worker_id="w", now=T0, lease_seconds=30)
    store.add_now([waiting, later, started])
    done = failed(store)
    out = await CancelJobs(store, FrozenClock(T0), cancellations)(JobFilter(), limit=100)
    assert {j.id for j in out.changed} == {waiting.id, later.id, started.id}
    assert all(store.rows[j].state is State.CANCELLED for j in (waiting.id, later.id, started.id))
    assert store.rows[done.id].state is State.FAILED
    assert cancellations.announced == [started.id]
    assert [r.outcome for r in store.history[started.id]] == ["cancelled"]


async def test_jobs_changed_meanwhile_are_reported_as_skipped() -> None:
    store = InMemoryJobRepository()
    a, b = job(), job()
    store.add_now([a, b])

    class Racing(InMemoryJobRepository):
        async def save_many(self, changes: list[Finished]) -> Recorded:  # type: ignore[override]
            store.save_now(store.rows[b.id].start(worker_id="w", now=T0, lease_seconds=30))  # b moves first
            return await store.save_many(changes)

    racing = Racing()
    racing.rows = store.rows
    out = await CancelJobs(racing, FrozenClock(T0))(JobFilter(), limit=10)
    assert [j.id for j in out.changed] == [a.id] and out.skipped == [b.id]
    assert store.rows[b.id].state is State.RUNNING


@pytest.mark.parametrize("limit", [0, 10_001])
async def test_the_limit_is_bounded(limit: int) -> None:
    with pytest.raises(InvalidInput):
        await CancelJobs(InMemoryJobRepository(), FrozenClock(T0))(JobFilter(), limit=limit)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["queued", "failed", "cancelled", "running"]), max_size=12),
       st.integers(min_value=1, max_value=15))
async def test_retry_never_touches_more_than_the_limit_nor_a_non_retryable_job(kinds: list[str],
                                                                              limit: int) -> None:
    store = InMemoryJobRepository()
    for kind in kinds:
        if kind == "failed":
            failed(store)
        elif kind == "cancelled":
            cancelled(store)
        else:
            new = job()
            store.add_now([new.start(worker_id="w", now=T0, lease_seconds=30) if kind == "running" else new])
    before = dict(store.rows)
    out = await RetryJobs(store, InMemoryDispatcher(), FrozenClock(T0))(JobFilter(), limit=limit)
    retryable = [j for j in before.values() if j.state in RETRYABLE]
    assert len(out.changed) == min(limit, len(retryable)) and out.more == (len(retryable) > limit)
    for job_id, old in before.items():
        now_ = store.rows[job_id]
        assert now_ == old or (old.state in RETRYABLE and now_.state is State.QUEUED)


async def test_throughput_series_covers_the_last_hour_in_minute_buckets() -> None:
    store = InMemoryJobRepository()
    failed(store, T0 - timedelta(minutes=90))  # outside the window
    failed(store, T0 - timedelta(minutes=59, seconds=10))  # in the first bucket
    failed(store, T0)  # in the current, partial bucket
    series = await QueueThroughput(store, FrozenClock(T0))()
    assert series.since == datetime(2026, 11, 2, 11, 1, tzinfo=UTC) and series.buckets == 60
    assert sorted(series.index(c) for c in series.counts) == [0, 59]


async def test_throughput_refuses_a_window_that_is_not_whole_buckets() -> None:
    with pytest.raises(InvalidInput):
        await QueueThroughput(InMemoryJobRepository(), FrozenClock(T0))(window=timedelta(seconds=90))
