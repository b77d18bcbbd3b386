"""Real `gnomon worker` and `gnomon scheduler` processes on the test's own PostgreSQL database and Redis prefix:
at-least-once after kill -9, draining on SIGTERM, timeouts, cancellation, priorities, queues, user tasks."""

from __future__ import annotations

from pathlib import Path

from domain.job import Outcome, State
from tests.integration.processes import gnomon, gnomon_env
from tests.integration.stack import (
    QUICK_RETRY,
    client,
    new_prefix,
    sample_tasks,
    sigterm,
    spec,
    tasks_of,
    wait_for_path,
    worker_id,
)

FAST_LEASE = {"lease_seconds": 2, "heartbeat_seconds": 0.5}


async def test_a_job_of_a_killed_worker_is_retried_after_its_lease_and_succeeds(pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST_LEASE)
    async with client(pg_url, redis_url, prefix) as jobs:
        with gnomon("scheduler", env=env) as scheduler, gnomon("worker", env=env) as doomed:
            scheduler.wait_for_log("ready")
            doomed.wait_for_log("ready")
            [job_id] = await jobs.submit(spec("sleep", payload={"seconds": 2}, backoff=QUICK_RETRY))
            first = await jobs.until(job_id, State.RUNNING)
            doomed.kill()
            with gnomon("worker", env=env) as survivor:
                survivor.wait_for_log("ready")
                done = await jobs.until(job_id, State.SUCCEEDED, timeout=20)
            runs = await jobs.runs(job_id)
    assert [(r.attempt, r.outcome) for r in runs] == [(1, Outcome.LOST), (2, Outcome.SUCCEEDED)]
    assert first.lease is not None and runs[0].worker_id == first.lease.worker_id != runs[1].worker_id
    assert done.attempt == 2 and done.result == {"slept": 2}


async def test_sigterm_drains_finishes_short_jobs_releases_long_ones_and_exits_0(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, tasks=sample_tasks("gate"), shutdown_grace_seconds=2,
                     **FAST_LEASE)
    short_gate, long_gate = tmp_path / "short", tmp_path / "long"
    async with client(pg_url, redis_url, prefix, tasks=tasks_of(sample_tasks("gate"))) as jobs:
        with gnomon("worker", env=env) as worker:
            worker.wait_for_log("ready")
            short, long = await jobs.submit(spec("gate", payload={"open": str(short_gate)}),
                                            spec("gate", payload={"open": str(long_gate)}))
            await jobs.until(short, State.RUNNING)
            await jobs.until(long, State.RUNNING)
            sigterm(worker)
            worker.wait_for_log("draining")
            short_gate.touch()  # the short job ends inside the grace period; the long one never does
            assert worker.proc.wait(20) == 0
        finished, released = await jobs.job(short), await jobs.job(long)
        assert finished.state is State.SUCCEEDED and finished.attempt == 1
        assert [r.outcome for r in await jobs.runs(short)] == [Outcome.SUCCEEDED]
        assert released.state is State.RETRY and released.attempt == 0 and released.lease is None
        assert await jobs.runs(long) == []  # released, not failed: no attempt spent, no history row
        long_gate.touch()
        with gnomon("scheduler", env=env) as scheduler, gnomon("worker", env=env) as worker:
            scheduler.wait_for_log("ready")
            done = await jobs.until(long, State.SUCCEEDED)
    assert done.attempt == 1 and done.result == {"opened": True, "attempt": 1}


async def test_a_job_past_its_timeout_ends_as_timeout_and_the_worker_goes_on(pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST_LEASE)
    async with client(pg_url, redis_url, prefix) as jobs:
        with gnomon("worker", "--concurrency", "1", env=env) as worker:
            worker.wait_for_log("ready")
            slow, after = await jobs.submit(
                spec("sleep", payload={"seconds": 60}, timeout_seconds=0.5, max_attempts=1),
                spec("noop", payload={}))
            timed_out = await jobs.until(slow, State.FAILED)
            await jobs.until(after, State.SUCCEEDED)
            assert worker.alive()
        [run] = await jobs.runs(slow)
    assert run.outcome is Outcome.TIMEOUT and "timed out after 0.5 s" in (run.error or "")
    assert timed_out.last_error == run.error


async def test_cancelling_a_running_async_job_cancels_its_handler(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    await _cancel_running(pg_url, redis_url, tmp_path, "gate")


async def test_cancelling_a_running_sync_job_sets_ctx_cancelled(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    await _cancel_running(pg_url, redis_url, tmp_path, "sync_gate")


async def _cancel_running(pg_url: str, redis_url: str, tmp_path: Path, task: str) -> None:
    prefix = new_prefix()
    # Heartbeats every 30 s: within the 10 s the test waits, only the cancel notice (pub/sub) can stop it.
    env = gnomon_env(pg_url, redis_url, prefix=prefix, tasks=sample_tasks(task), lease_seconds=90)
    marker = tmp_path / "marker"
    async with client(pg_url, redis_url, prefix, tasks=tasks_of(sample_tasks(task))) as jobs:
        with gnomon("worker", "--concurrency", "1", env=env) as worker:
            worker.wait_for_log("ready")
            [job_id] = await jobs.submit(spec(task, payload={"open": str(tmp_path / "never"), "marker": str(marker)}))
            await jobs.until(job_id, State.RUNNING)
            cancelled = await jobs.cancel(job_id)
            await wait_for_path(marker)  # the handler itself saw the cancellation
            [after] = await jobs.submit(spec("noop"))
            await jobs.until(after, State.SUCCEEDED)  # its only slot is free again
            assert worker.alive()
        job, runs = await jobs.job(job_id), await jobs.runs(job_id)
    assert cancelled.state is State.CANCELLED and job.state is State.CANCELLED
    assert [(r.attempt, r.outcome) for r in runs] == [(1, Outcome.CANCELLED)]
    assert marker.read_text() == "cancelled attempt 1"


async def test_one_worker_of_concurrency_1_starts_a_prefilled_queue_in_priority_order(
        pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST_LEASE)
    priorities = [0, 5, 9, 1, 9, 3, 7, 0, 2, 8]
    async with client(pg_url, redis_url, prefix) as jobs:
        ids = await jobs.submit(*(spec("noop", payload={"n": i}, priority=p) for i, p in enumerate(priorities)))
        with gnomon("worker", "--concurrency", "1", env=env) as worker:
            worker.wait_for_log("ready")
            done = [await jobs.until(job_id, State.SUCCEEDED) for job_id in ids]
    started = sorted(done, key=lambda job: (job.started_at, job.id))
    assert [job.priority for job in started] == sorted(priorities, reverse=True)
    # FIFO within a priority: the two 9s and the two 0s start in the order they were submitted
    assert [job.payload["n"] for job in started if job.priority in (9, 0)] == [2, 4, 0, 7]


async def test_two_queues_served_by_different_workers_each_run_only_their_own(pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST_LEASE)
    async with client(pg_url, redis_url, prefix) as jobs:
        with gnomon("worker", "--queues", "mail", env=env) as mail, \
                gnomon("worker", "--queues", "video", env=env) as video:
            names = {"mail": worker_id(mail), "video": worker_id(video)}
            ids = {queue: await jobs.submit(*(spec("noop", queue=queue) for _ in range(20)))
                   for queue in ("mail", "video")}
            for queue_ids in ids.values():
                for job_id in queue_ids:
                    await jobs.until(job_id, State.SUCCEEDED)
        workers = {queue: {(await jobs.runs(job_id))[0].worker_id for job_id in queue_ids}
                   for queue, queue_ids in ids.items()}
    assert workers == {"mail": {names["mail"]}, "video": {names["video"]}}
    assert names["mail"] != names["video"]


async def test_user_tasks_run_from_gnomon_tasks_with_results_stored_and_unknown_tasks_fail_for_good(
        pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, tasks=sample_tasks("where"), **FAST_LEASE)
    submitter_tasks = tasks_of(sample_tasks("where", "ghost"))  # the submitting side knows one more task
    async with client(pg_url, redis_url, prefix, tasks=submitter_tasks) as jobs:
        with gnomon("worker", env=env) as worker:
            worker.wait_for_log("ready")
            known, unknown = await jobs.submit(spec("where", payload={"x": [1, 2]}),
                                               spec("ghost", max_attempts=5))
            ran = await jobs.until(known, State.SUCCEEDED)
            failed = await jobs.until(unknown, State.FAILED)
        [ghost_run] = await jobs.runs(unknown)
    assert ran.result["echo"] == {"x": [1, 2]} and ran.result["job_id"] == known and ran.result["attempt"] == 1
    assert ran.result["thread"].startswith("gnomon-task")  # a sync handler runs in the thread pool
    assert failed.attempt == 1 and "'ghost' is not registered" in (failed.last_error or "")
    assert ghost_run.outcome is Outcome.FAILED


async def test_a_sync_handler_deaf_to_cancellation_does_not_hold_the_exit_after_the_drain(
        pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, tasks=sample_tasks("stubborn"), shutdown_grace_seconds=0.5,
                     **FAST_LEASE)
    async with client(pg_url, redis_url, prefix, tasks=tasks_of(sample_tasks("stubborn"))) as jobs:
        with gnomon("worker", env=env) as worker:
            worker.wait_for_log("ready")
            [job_id] = await jobs.submit(spec("stubborn", payload={"seconds": 120}))
            await jobs.until(job_id, State.RUNNING)
            sigterm(worker)
            assert worker.proc.wait(20) == 0  # not 120 s: the thread is left behind
            assert "handler threads still running" in worker.log
        released = await jobs.job(job_id)
    assert released.state is State.RETRY and released.attempt == 0
