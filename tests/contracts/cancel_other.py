"""Contract suite of a schedule's cancel_other as a ScheduleRepository records it: the displaced job is cancelled
before the new one is gated, the firing reports what it cancelled (with the run, so that the running job's worker
can be told) and wakes the held jobs of the cancelled job's key and limited queue in the same write. Runs on the
memory adapters (tests/unit) and on PostgreSQL (tests/integration); subclasses provide `jobs`, `schedules` and
`queue_settings` (sharing one store)."""

from __future__ import annotations

from typing import Any

from application.identity import new_id
from domain.flow import QueueSettings
from domain.job import Hold, JobSpec, Outcome, State
from tests.contracts.repositories import T0, at, make_job, make_schedule, planner

RUNNING_LEASE = 600.0  # the first job still runs when the next occurrence fires


def cancelling(**job: Any):
    return make_schedule(overlap_policy="cancel_other", job=JobSpec(task="noop", **job))


async def fire_and_start(jobs, schedules, schedule, limited: tuple[str, ...] = ()):
    """Add the schedule, fire its first occurrence (at 60 s) and start that job."""
    await schedules.add(schedule)
    [first] = (await schedules.fire_due(at(60), 10, planner(at(60)))).jobs
    [started] = await jobs.claim([first.id], worker_id="w1", now=at(61), lease_seconds=RUNNING_LEASE,
                                 limited=limited)
    return started


class CancelOtherContract:
    async def test_the_cancelled_running_job_comes_back_with_its_run_and_the_new_job_is_not_held(
            self, jobs, schedules) -> None:
        first = await fire_and_start(jobs, schedules, cancelling(concurrency_key="nightly"))

        fired = await schedules.fire_due(at(120), 10, planner(at(120)))

        [change] = fired.cancelled
        assert change.job.id == first.id and change.job.state is State.CANCELLED
        assert change.run is not None and change.run.outcome is Outcome.CANCELLED and change.run.worker_id == "w1"
        assert (await jobs.get(first.id)).state is State.CANCELLED
        [second] = fired.jobs
        assert not second.held and not (await jobs.get(second.id)).held
        assert fired.woken == []

    async def test_held_jobs_of_the_cancelled_key_are_woken_before_the_new_job_is_gated(self, jobs, schedules) -> None:
        first = await fire_and_start(jobs, schedules, cancelling(concurrency_key="nightly"))
        [waiting] = [s.job for s in await jobs.add([make_job(at(70), concurrency_key="nightly")])]
        assert waiting.held_for is Hold.KEY

        fired = await schedules.fire_due(at(120), 10, planner(at(120)))

        assert [j.id for j in fired.woken] == [waiting.id]
        woken = await jobs.get(waiting.id)
        assert not woken.held and woken.state is State.QUEUED and woken.dispatched_at == at(120)
        [second] = fired.jobs  # the key's one slot went to the job that waited: the new one waits behind it
        assert second.held_for is Hold.KEY and (await jobs.get(second.id)).held_for is Hold.KEY
        assert [c.job.id for c in fired.cancelled] == [first.id]

    async def test_held_jobs_of_a_limited_queue_are_woken_when_its_running_job_is_cancelled(
            self, jobs, schedules, queue_settings) -> None:
        await queue_settings.upsert(QueueSettings(queue="q", max_running=1, updated_at=T0))
        first = await fire_and_start(jobs, schedules, cancelling(queue="q"), limited=("q",))
        [other] = [s.job for s in await jobs.add([make_job(at(70), queue="q")])]
        assert await jobs.claim([other.id], worker_id="w2", now=at(71), lease_seconds=30, limited=("q",)) == []
        assert (await jobs.get(other.id)).held_for is Hold.QUEUE

        fired = await schedules.fire_due(at(120), 10, planner(at(120)))

        assert [c.job.id for c in fired.cancelled] == [first.id]
        assert [j.id for j in fired.woken] == [other.id] and not (await jobs.get(other.id)).held

    async def test_a_finished_previous_job_is_not_cancelled_again(self, jobs, schedules) -> None:
        first = await fire_and_start(jobs, schedules, cancelling(concurrency_key="nightly"))
        done, run = first.succeed(token=first.version, now=at(90))
        await jobs.save(done, run)

        fired = await schedules.fire_due(at(120), 10, planner(at(120)))

        assert fired.cancelled == [] and fired.woken == []
        assert (await jobs.get(first.id)).state is State.SUCCEEDED
        [second] = fired.jobs
        assert not second.held

    async def test_record_reports_the_cancels_of_a_firing_as_fire_due_does(self, jobs, schedules) -> None:
        schedule = cancelling(concurrency_key="nightly")
        first = await fire_and_start(jobs, schedules, schedule)
        stored = await schedules.get(schedule.id)

        fired = await schedules.record(stored.plan(now=at(120), previous=first, new_id=new_id))

        assert [(c.job.id, c.run is not None) for c in fired.cancelled] == [(first.id, True)]
        assert [j.held for j in fired.jobs] == [False]
