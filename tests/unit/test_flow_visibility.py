"""What an operator sees of flow control, on the memory adapters: a held job in the API and the dashboard, the held
and woken metrics, cancellations counted as finished, and a schedule's cancel_other treated as any cancel (the
worker told at once, held jobs of the key woken at once rather than at the next sweep)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient
from prometheus_client import CollectorRegistry

from adapters.http.app import create_app
from adapters.memory.cancellations import InMemoryCancellations
from adapters.memory.clock import FrozenClock
from adapters.memory.metrics import RecordingMetrics
from adapters.metrics.prometheus import PrometheusMetrics, exposition
from application.manage_jobs import CancelJob
from application.manage_schedules import ResumeSchedule
from application.scheduler import SchedulerTick
from application.worker import Worker, WorkerSettings
from domain.job import Hold, JobSpec, Outcome, State
from entrypoints.container import MemoryAdapters, UseCases
from tests.contracts.repositories import LEASE, at, make_schedule
from tests.unit.fakes import Stack, patient_task, settle, working
from tests.unit.http_support import AUTH, T0, TOKEN, Api, KnownTasks, running_api, submit
from tests.unit.test_http_metrics import scrape
from tests.unit.ui_support import log_in

KEYED: dict[str, Any] = {"concurrency_key": "customer-7", "concurrency_limit": 1}


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as running:
        yield running


async def job(api: Api, job_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


# -- the API --------------------------------------------------------------------------------------------------


async def test_a_job_held_by_its_key_says_so_in_get_and_in_listings(api: Api) -> None:
    first = await submit(api, **KEYED)
    second = await submit(api, **KEYED)

    assert first["held"] is None
    assert second["held"] == {"reason": "concurrency_key", "since": "2026-03-02T12:00:00Z"}
    assert (await job(api, second["id"]))["held"] == second["held"]
    listed = (await api.client.get("/v1/jobs", params={"state": "queued"})).json()["items"]
    assert {j["id"]: j["held"] for j in listed} == {first["id"]: None, second["id"]: second["held"]}
    queue = (await api.client.get("/v1/queues")).json()["items"][0]
    assert queue["held"] == {"concurrency_key": 1, "queue": 0} and queue["counts"]["queued"] == 2


async def test_a_job_held_by_its_queue_says_so_and_a_cancel_of_the_running_one_releases_the_key(api: Api) -> None:
    await api.client.patch("/v1/queues/default", json={"paused": True})
    paused = await submit(api)
    await api.jobs.claim([paused["id"]], worker_id="w", now=api.clock.now(), lease_seconds=LEASE)
    assert (await job(api, paused["id"]))["held"] == {"reason": "queue", "since": "2026-03-02T12:00:00Z"}

    running = await submit(api, queue="mail", **KEYED)
    dispatcher = api.container.adapters.dispatcher()
    assert await dispatcher.pop(["mail"], limit=10, timeout=0) == [running["id"]]
    await api.jobs.claim([running["id"]], worker_id="w", now=api.clock.now(), lease_seconds=LEASE)
    waiting = await submit(api, queue="mail", **KEYED)
    assert (await job(api, waiting["id"]))["held"]["reason"] == "concurrency_key"

    assert (await api.client.post(f"/v1/jobs/{running['id']}/cancel")).status_code == 200

    assert (await job(api, waiting["id"]))["held"] is None
    assert await dispatcher.pop(["mail"], limit=10, timeout=0) == [waiting["id"]]
    held = {q["queue"]: q["held"] for q in (await api.client.get("/v1/queues")).json()["items"]}
    assert held == {"default": {"concurrency_key": 0, "queue": 1}, "mail": {"concurrency_key": 0, "queue": 0}}


async def test_the_openapi_document_describes_held() -> None:
    async with running_api() as api:
        schema = (await api.client.get("/schema/openapi.json")).json()
    views = schema["components"]["schemas"]
    job_view = next(v for name, v in views.items() if name.endswith("JobView"))
    assert "held" in job_view["properties"]
    held_view = next(v for name, v in views.items() if name.endswith("HeldView"))
    assert set(held_view["properties"]) == {"reason", "since"}
    assert held_view["properties"]["reason"]["enum"] == ["concurrency_key", "queue"]


async def test_the_dashboard_shows_a_held_job_and_the_held_count_of_its_queue(api: Api) -> None:
    await log_in(api.client)
    await submit(api, **KEYED)
    held = await submit(api, **KEYED)

    page = (await api.client.get(f"/ui/jobs/{held['id']}")).text
    listing = (await api.client.get("/ui/jobs")).text
    overview = (await api.client.get("/ui")).text

    assert "Held" in page and "behind its concurrency key" in page and 's-held' in page
    assert listing.count('badge s-held') == 1
    assert "1 held" in overview


# -- metrics --------------------------------------------------------------------------------------------------


async def test_an_api_cancel_counts_as_finished_cancelled_and_counts_the_jobs_it_woke() -> None:
    registry = CollectorRegistry()
    container = UseCases(adapters=MemoryAdapters(tasks=providers.Object(KnownTasks())),
                         metrics=providers.Object(PrometheusMetrics(registry)))
    clock = FrozenClock(T0)
    container.clock.override(providers.Object(clock))
    jobs = container.adapters.jobs()
    async with AsyncTestClient(create_app(container, tokens=[TOKEN], registry=registry)) as client:
        client.headers.update(AUTH)
        running = (await client.post("/v1/jobs", json={"task": "noop", "queue": "mail", **KEYED})).json()
        await jobs.claim([running["id"]], worker_id="w", now=T0, lease_seconds=LEASE)
        await client.post("/v1/jobs", json={"task": "noop", "queue": "mail", **KEYED})
        queued = (await client.post("/v1/jobs", json={"task": "noop", "queue": "mail"})).json()
        for job_id in (running["id"], queued["id"]):
            assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
        assert (await client.post(f"/v1/jobs/{queued['id']}/cancel")).status_code == 409  # counted once
        found = scrape((await client.get("/metrics")).text)

    labels = frozenset({"queue": "mail", "task": "noop", "outcome": "cancelled"}.items())
    assert found["gnomon_jobs_finished_total", labels] == 2
    assert found["gnomon_jobs_woken_total", frozenset({"queue": "mail", "by": "cancel"}.items())] == 1


async def test_queue_stats_carry_held_counts_by_reason_into_the_gauges() -> None:
    stack = Stack()
    metrics = PrometheusMetrics(CollectorRegistry())
    submit_jobs = stack.submit()
    await submit_jobs([JobSpec(task="noop", queue="mail", concurrency_key="k") for _ in range(3)])
    stats = await stack.jobs.queue_stats(at(0))

    assert [(s.queue, s.held) for s in stats] == [("mail", {Hold.KEY: 2})]
    metrics.queue_stats(stats, at(0))
    body = scrape(_text(metrics))
    assert body["gnomon_queue_held_jobs", frozenset({"queue": "mail", "reason": "concurrency_key"}.items())] == 2
    assert body["gnomon_queue_held_jobs", frozenset({"queue": "mail", "reason": "queue"}.items())] == 0
    metrics.queue_stats([], at(0))
    assert not any(name == "gnomon_queue_held_jobs" for name, _ in scrape(_text(metrics)))


def _text(metrics: PrometheusMetrics) -> str:
    return exposition(metrics.registry)[0].decode()


async def test_the_sweep_and_a_rescue_count_the_jobs_they_wake_by_who_woke_them() -> None:
    stack = Stack()
    metrics = RecordingMetrics()
    tick = SchedulerTick(stack.jobs, stack.schedules, stack.dispatcher, stack.clock, metrics=metrics)
    submitted = await stack.submit()([JobSpec(task="noop", concurrency_key="k") for _ in range(2)])
    [second] = [s.job for s in submitted if s.job.held]  # which one the key lets through goes by id, not order
    [first] = [s.job for s in submitted if not s.job.held]
    await stack.jobs.claim([first.id], worker_id="w", now=at(0), lease_seconds=LEASE)
    stack.clock.advance(LEASE + 1)

    await tick()

    assert metrics.counters["woken", "default", "rescue"] == 1
    assert not (await stack.jobs.get(second.id)).held
    assert metrics.total("rescued") == 1

    [lone] = await stack.submit()([JobSpec(task="noop", queue="mail", concurrency_key="alone")])
    stack.jobs.rows[lone.job.id] = lone.job.hold(now=stack.clock.now(), reason=Hold.KEY)  # a lost wake-up
    stack.clock.advance(tick.settings.dispatch_timeout.total_seconds() + 1)
    await tick()
    assert metrics.counters["woken", "mail", "sweep"] == 1


# -- cancel_other ---------------------------------------------------------------------------------------------


def cancelling_schedule(**spec: Any):
    return make_schedule(overlap_policy="cancel_other",
                         job=JobSpec(task="noop", concurrency_key="nightly", concurrency_limit=1), **spec)


def ticking(stack: Stack) -> tuple[SchedulerTick, InMemoryCancellations, RecordingMetrics]:
    cancellations, metrics = InMemoryCancellations(), RecordingMetrics()
    tick = SchedulerTick(stack.jobs, stack.schedules, stack.dispatcher, stack.clock, metrics=metrics,
                         cancellations=cancellations)
    return tick, cancellations, metrics


async def first_one_running(stack: Stack, tick: SchedulerTick) -> str:
    """A cancel_other schedule fires at 60 s and its job is claimed, still running at the next occurrence."""
    await stack.schedules.add(cancelling_schedule())
    stack.clock.at = at(60)
    await tick(sweep=False)
    [first] = await stack.dispatcher.pop(["default"], limit=10, timeout=0)
    await stack.jobs.claim([first], worker_id="w", now=at(61), lease_seconds=600)
    return first


async def test_cancel_other_tells_the_worker_at_once_and_the_new_job_is_not_held_behind_the_cancelled_one() -> None:
    stack = Stack()
    tick, cancellations, metrics = ticking(stack)
    first = await first_one_running(stack, tick)

    stack.clock.at = (at(120))
    report = await tick(sweep=False)

    assert report.fired == 1
    assert (await stack.jobs.get(first)).state is State.CANCELLED
    assert await cancellations.listen(timeout=0) == [first]
    [second] = await stack.dispatcher.pop(["default"], limit=10, timeout=0)  # dispatched now, not at a sweep
    assert second != first and not (await stack.jobs.get(second)).held
    assert metrics.counters["finished", "default", "noop", "cancelled"] == 1


async def test_cancel_other_wakes_the_jobs_held_behind_the_cancelled_one_before_gating_the_new_one() -> None:
    stack = Stack()
    tick, cancellations, metrics = ticking(stack)
    first = await first_one_running(stack, tick)
    [waiting] = await stack.submit()([JobSpec(task="noop", concurrency_key="nightly")])
    assert waiting.job.held

    stack.clock.at = (at(120))
    await tick(sweep=False)

    assert not (await stack.jobs.get(waiting.job.id)).held  # its key's slot freed: woken in the same write
    assert await stack.dispatcher.pop(["default"], limit=10, timeout=0) == [waiting.job.id]
    fired = [j for j in stack.jobs.rows.values() if j.schedule_id and j.id != first]
    assert [j.held_for for j in fired] == [Hold.KEY]  # the waiting job took the key's one slot first
    assert metrics.counters["woken", "default", "cancel"] == 1
    assert await cancellations.listen(timeout=0) == [first]


async def test_cancel_other_of_a_job_not_running_announces_nothing() -> None:
    stack = Stack()
    tick, cancellations, metrics = ticking(stack)
    await stack.schedules.add(cancelling_schedule())
    stack.clock.at = (at(60))
    await tick(sweep=False)
    stack.clock.at = (at(120))
    await tick(sweep=False)

    assert await cancellations.listen(timeout=0) == []
    assert metrics.counters["finished", "default", "noop", "cancelled"] == 1


async def test_a_resume_that_cancels_the_running_job_tells_its_worker_and_counts_it() -> None:
    stack = Stack()
    tick, _, _ = ticking(stack)
    schedule = cancelling_schedule()
    await stack.schedules.add(schedule)
    stack.clock.at = (at(60))
    await tick(sweep=False)
    [first] = await stack.dispatcher.pop(["default"], limit=10, timeout=0)
    await stack.jobs.claim([first], worker_id="w", now=at(61), lease_seconds=600)
    stored = await stack.schedules.get(schedule.id)
    await stack.schedules.save(stored.pause(now=at(62)))
    cancellations, metrics = InMemoryCancellations(), RecordingMetrics()
    resume = ResumeSchedule(stack.schedules, stack.jobs, stack.dispatcher, stack.clock, cancellations=cancellations,
                            metrics=metrics)

    stack.clock.at = (at(130))
    await resume(schedule.id)

    assert (await stack.jobs.get(first)).state is State.CANCELLED
    assert await cancellations.listen(timeout=0) == [first]
    assert metrics.counters["finished", "default", "noop", "cancelled"] == 1
    [second] = await stack.dispatcher.pop(["default"], limit=10, timeout=0)
    assert not (await stack.jobs.get(second)).held


async def test_cancel_job_without_metrics_or_cancellations_still_cancels() -> None:
    stack = Stack()
    [submitted] = await stack.submit()([JobSpec(task="noop")])
    cancelled = await CancelJob(stack.jobs, stack.clock)(submitted.job.id)
    assert cancelled.state is State.CANCELLED


async def test_the_handler_of_a_job_cancel_other_displaces_is_stopped_by_the_notice_not_the_heartbeat() -> None:
    stack = Stack()
    notices, stopped = InMemoryCancellations(), patient_task(stack)
    tick = SchedulerTick(stack.jobs, stack.schedules, stack.dispatcher, stack.clock, cancellations=notices)
    schedule = make_schedule(overlap_policy="cancel_other", job=JobSpec(task="patient", concurrency_key="nightly"))
    await stack.schedules.add(schedule)
    settings = WorkerSettings(worker_id="w1", pop_timeout=0.01, heartbeat_seconds=60, lease_seconds=600,
                              shutdown_grace_seconds=0.01)  # the second job is released at the end
    worker = Worker(stack.jobs, stack.dispatcher, stack.tasks, stack.clock, settings, cancellations=notices)
    stack.clock.at = at(60)
    await tick(sweep=False)
    [first] = [j.id for j in stack.jobs.rows.values()]
    async with working(worker):
        await settle(stack, first, State.RUNNING)
        stack.clock.at = at(120)
        await tick(sweep=False)
        await asyncio.wait_for(stopped.wait(), 3)  # the heartbeat alone would take 60 s
        [second] = [j.id for j in stack.jobs.rows.values() if j.id != first]
        await settle(stack, second, State.RUNNING)  # not held behind the cancelled job: the worker started it
    assert [r.outcome for r in await stack.jobs.runs(first)] == [Outcome.CANCELLED]


async def test_a_worker_counts_the_held_jobs_its_finishes_wake() -> None:
    stack = Stack()
    metrics = RecordingMetrics()
    submitted = await stack.submit()([JobSpec(task="noop", concurrency_key="k") for _ in range(2)])
    [held] = [s.job for s in submitted if s.job.held]
    worker = Worker(stack.jobs, stack.dispatcher, stack.tasks, stack.clock,
                    WorkerSettings(worker_id="w1", pop_timeout=0.01), metrics=metrics)
    async with working(worker):
        await settle(stack, held.id, State.SUCCEEDED)
    assert metrics.counters["woken", "default", "finish"] == 1
