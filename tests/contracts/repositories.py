"""Contract suites for JobRepository and ScheduleRepository: the same tests run against the in-memory fakes
(tests/unit) and the PostgreSQL adapters (tests/integration). Subclasses provide the fixtures
`jobs` and `schedules` (sharing one store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from application.identity import new_id
from application.ports import Finished, JobFilter, Promoted
from domain.errors import DuplicateSchedule, JobNotFound, ScheduleNotFound, StaleWrite
from domain.job import Job, JobSpec, Outcome, State
from domain.schedule import Fate, Schedule, ScheduleSpec

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
LEASE = 30.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_job(now: datetime = T0, **spec: object) -> Job:
    fields: dict[str, object] = {"task": "noop", "payload": {"n": 1}}
    fields.update(spec)
    return Job.create(new_id(now), JobSpec(**fields), now=now)  # type: ignore[arg-type]


async def running(jobs, now: datetime = T0, **spec: object) -> Job:
    job = make_job(now, **spec)
    await jobs.add([job])
    [claimed] = await jobs.claim([job.id], worker_id="w1", now=now, lease_seconds=LEASE)
    return claimed


class JobRepositoryContract:
    async def test_add_then_get_round_trips_every_field(self, jobs) -> None:
        job = make_job(task="email", payload={"to": "a@b.c", "nested": [1, {"x": None}]}, queue="mail",
                       priority=7, run_at=at(60), max_attempts=5, timeout_seconds=12.5,
                       idempotency_key="k-1", concurrency_key="cust-1", concurrency_limit=2)
        [submitted] = await jobs.add([job])
        assert submitted.created and submitted.job == job
        assert await jobs.get(job.id) == job

    async def test_get_unknown_raises(self, jobs) -> None:
        with pytest.raises(JobNotFound):
            await jobs.get(new_id(T0))

    async def test_same_idempotency_key_returns_the_existing_job(self, jobs) -> None:
        first = make_job(idempotency_key="same")
        await jobs.add([first])
        [again] = await jobs.add([make_job(idempotency_key="same", payload={"other": True})])
        assert not again.created and again.job.id == first.id
        page = await jobs.list(JobFilter(), limit=10, cursor=None)
        assert [j.id for j in page.items] == [first.id]

    async def test_duplicate_keys_inside_one_batch_store_one_job(self, jobs) -> None:
        out = await jobs.add([make_job(idempotency_key="b"), make_job(idempotency_key="b")])
        assert [s.created for s in out] == [True, False]
        assert out[0].job.id == out[1].job.id

    async def test_list_pages_newest_first_without_gaps(self, jobs) -> None:
        made = [make_job(at(i), queue="even" if i % 2 == 0 else "odd") for i in range(25)]
        await jobs.add(made)
        seen, cursor = [], None
        while True:
            page = await jobs.list(JobFilter(), limit=10, cursor=cursor)
            seen += [j.id for j in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [j.id for j in reversed(made)]
        odd = await jobs.list(JobFilter(queue="odd"), limit=100, cursor=None)
        assert {j.id for j in odd.items} == {j.id for j in made if j.queue == "odd"}

    async def test_list_filters_by_state_and_task(self, jobs) -> None:
        due, later = make_job(task="a"), make_job(task="b", run_at=at(100))
        await jobs.add([due, later])
        scheduled = await jobs.list(JobFilter(state=State.SCHEDULED), limit=10, cursor=None)
        assert [j.id for j in scheduled.items] == [later.id]
        by_task = await jobs.list(JobFilter(task="a"), limit=10, cursor=None)
        assert [j.id for j in by_task.items] == [due.id]

    async def test_promote_due_moves_only_due_waiting_jobs(self, jobs) -> None:
        soon, late, now_ = make_job(run_at=at(5)), make_job(run_at=at(50)), make_job()
        await jobs.add([soon, late, now_])
        promoted = await jobs.promote_due(at(10), 100)
        assert promoted == [Promoted(id=soon.id, queue=soon.queue, priority=soon.priority)]
        stored = await jobs.get(soon.id)
        assert stored.state is State.QUEUED and stored.dispatched_at == at(10) and not stored.held
        assert stored.version == soon.version + 1
        assert (await jobs.get(late.id)).state is State.SCHEDULED
        assert await jobs.promote_due(at(10), 100) == []

    async def test_promote_due_respects_the_limit(self, jobs) -> None:
        await jobs.add([make_job(run_at=at(i + 1)) for i in range(7)])
        assert len(await jobs.promote_due(at(100), 3)) == 3
        assert len(await jobs.promote_due(at(100), 10)) == 4

    async def test_promote_due_returns_earliest_run_at_first_with_what_dispatch_needs(self, jobs) -> None:
        made = [make_job(run_at=at(9 - i), queue=f"q{i % 2}", priority=i) for i in range(5)]
        await jobs.add(made)
        promoted = await jobs.promote_due(at(100), 10)
        assert promoted == [Promoted(id=j.id, queue=j.queue, priority=j.priority) for j in reversed(made)]

    async def test_next_due_at_is_the_earliest_waiting_job(self, jobs) -> None:
        assert await jobs.next_due_at() is None
        await jobs.add([make_job(run_at=at(90)), make_job(run_at=at(30)), make_job()])
        assert await jobs.next_due_at() == at(30)

    async def test_claim_takes_only_queued_jobs_once(self, jobs) -> None:
        queued, scheduled = make_job(), make_job(run_at=at(100))
        await jobs.add([queued, scheduled])
        ids = [queued.id, scheduled.id, queued.id, new_id(T0)]
        claimed = await jobs.claim(ids, worker_id="w1", now=at(1), lease_seconds=LEASE)
        assert [j.id for j in claimed] == [queued.id]
        job = claimed[0]
        assert job.state is State.RUNNING and job.attempt == 1 and job.started_at == at(1)
        assert job.lease is not None and job.lease.worker_id == "w1" and job.lease.token == job.version
        assert job.lease.expires_at == at(1 + LEASE)
        assert await jobs.claim([queued.id], worker_id="w2", now=at(2), lease_seconds=LEASE) == []
        assert await jobs.get(job.id) == job

    async def test_adopt_gives_a_worker_back_only_the_jobs_running_under_its_live_lease(self, jobs) -> None:
        mine, theirs, waiting = make_job(), make_job(), make_job()
        await jobs.add([mine, theirs, waiting])
        [claimed] = await jobs.claim([mine.id], worker_id="w1", now=at(1), lease_seconds=LEASE)
        await jobs.claim([theirs.id], worker_id="w2", now=at(1), lease_seconds=LEASE)
        ids = [mine.id, theirs.id, waiting.id, new_id(T0)]
        assert await jobs.adopt(ids, worker_id="w1", now=at(2)) == [claimed]
        assert await jobs.adopt(ids, worker_id="w1", now=at(1 + LEASE)) == []  # its lease has expired
        assert await jobs.adopt([], worker_id="w1", now=at(2)) == []

    async def test_renew_extends_held_leases_and_reports_lost_ones(self, jobs) -> None:
        a, b, c = [await running(jobs) for _ in range(3)]
        cancelled, run = (await jobs.get(c.id)).cancel(now=at(2))
        await jobs.save(cancelled, run)
        lost = await jobs.renew([(a.id, a.version), (b.id, b.version + 7), (c.id, c.version)], now=at(5),
                                lease_seconds=LEASE)
        assert sorted(lost) == sorted([b.id, c.id])
        renewed = await jobs.get(a.id)
        assert renewed.lease is not None and renewed.lease.expires_at == at(5 + LEASE)
        assert renewed.version == a.version
        assert await jobs.renew([(a.id, a.version)], now=at(500), lease_seconds=LEASE) == [a.id]

    async def test_finish_records_outcomes_and_runs(self, jobs) -> None:
        ok, bad = await running(jobs), await running(jobs, max_attempts=1)
        done, run_ok = ok.succeed(token=ok.version, now=at(3), result={"sum": 3})
        failed, run_bad = bad.fail(token=bad.version, now=at(4), error="boom")
        recorded = await jobs.finish([Finished(job=done, run=run_ok), Finished(job=failed, run=run_bad)], now=at(4))
        assert recorded.refused == [] and recorded.woken == []
        assert await jobs.get(ok.id) == done
        assert (await jobs.get(bad.id)).state is State.FAILED
        [run] = await jobs.runs(ok.id)
        assert run == run_ok and run.outcome is Outcome.SUCCEEDED and run.attempt == 1
        assert (await jobs.runs(bad.id))[0].error == "boom"

    async def test_finish_is_fenced_against_stale_and_expired_leases(self, jobs) -> None:
        cancelled_one, expired_one, fine = await running(jobs), await running(jobs), await running(jobs)
        gone, run = cancelled_one.cancel(now=at(1))
        await jobs.save(gone, run)
        outcomes = [Finished(job=j.succeed(token=j.version, now=at(2))[0], run=None)
                    for j in (cancelled_one, fine)]
        late = expired_one.succeed(token=expired_one.version, now=at(2))[0]
        refused = (await jobs.finish([*outcomes, Finished(job=late, run=None)], now=at(LEASE + 1))).refused
        assert sorted(refused) == sorted([cancelled_one.id, expired_one.id, fine.id])
        assert (await jobs.get(cancelled_one.id)).state is State.CANCELLED
        refused = (await jobs.finish([Finished(job=fine.succeed(token=fine.version, now=at(2))[0], run=None)],
                                     now=at(2))).refused
        assert refused == [] and (await jobs.get(fine.id)).state is State.SUCCEEDED
        assert [r.outcome for r in await jobs.runs(cancelled_one.id)] == [Outcome.CANCELLED]

    async def test_a_rescued_job_refuses_its_old_worker(self, jobs) -> None:
        job = await running(jobs)
        [expired] = await jobs.expired(at(LEASE), 10)
        lost, run = expired.lose(now=at(LEASE))
        await jobs.save(lost, run)
        assert lost.state is State.RETRY
        late = job.succeed(token=job.version, now=at(LEASE - 1))[0]
        assert (await jobs.finish([Finished(job=late, run=None)], now=at(LEASE - 1))).refused == [job.id]
        assert [r.outcome for r in await jobs.runs(job.id)] == [Outcome.LOST]

    async def test_expired_lists_only_running_jobs_past_their_lease(self, jobs) -> None:
        old = await running(jobs, T0)
        young = await running(jobs, at(20))
        assert [j.id for j in await jobs.expired(at(LEASE + 5), 10)] == [old.id]
        assert {j.id for j in await jobs.expired(at(LEASE + 25), 10)} == {old.id, young.id}

    async def test_save_is_compare_and_set_on_version(self, jobs) -> None:
        job = make_job()
        await jobs.add([job])
        first, run = job.cancel(now=at(1))
        await jobs.save(first, run)
        with pytest.raises(StaleWrite):
            await jobs.save(job.cancel(now=at(2))[0])
        with pytest.raises(JobNotFound):
            await jobs.save(make_job().cancel(now=at(1))[0])

    async def test_redispatch_stamps_queued_jobs_dispatched_long_ago(self, jobs) -> None:
        stale, fresh = make_job(T0), make_job(at(25))
        await jobs.add([stale, fresh])
        again = await jobs.redispatch(at(40), older_than=at(10), limit=10)
        assert [j.id for j in again] == [stale.id]
        assert (await jobs.get(stale.id)).dispatched_at == at(40)
        assert await jobs.redispatch(at(41), older_than=at(10), limit=10) == []

    async def test_runs_of_unknown_job_raise(self, jobs) -> None:
        with pytest.raises(JobNotFound):
            await jobs.runs(new_id(T0))

    async def test_queue_stats_count_by_state(self, jobs) -> None:
        await jobs.add([make_job(queue="q1"), make_job(queue="q1", run_at=at(9)), make_job(queue="q2")])
        job = await running(jobs, queue="q2")
        done, run = job.succeed(token=job.version, now=at(1))
        await jobs.finish([Finished(job=done, run=run)], now=at(1))
        stats = {s.queue: s for s in await jobs.queue_stats(at(2))}
        assert stats["q1"].counts["queued"] == 1 and stats["q1"].counts["scheduled"] == 1
        assert stats["q2"].counts["succeeded"] == 1 and stats["q2"].finished_last_minute == 1
        assert stats["q1"].oldest_queued_at == T0

    async def test_queue_stats_without_totals_count_what_is_in_flight(self, jobs) -> None:
        await jobs.add([make_job(queue="q1"), make_job(queue="q1", run_at=at(9)), make_job(queue="waiting",
                                                                                           run_at=at(9))])
        job = await running(jobs, queue="q1")
        await running(jobs, queue="q1")
        done, run = job.succeed(token=job.version, now=at(1))
        await jobs.finish([Finished(job=done, run=run)], now=at(1))
        stats = {s.queue: s for s in await jobs.queue_stats(at(2), totals=False)}
        assert set(stats) == {"q1"}
        assert stats["q1"].counts == {"queued": 1, "running": 1}
        assert stats["q1"].finished_last_minute == 1 and stats["q1"].oldest_queued_at == T0

    async def test_prune_deletes_only_old_finished_jobs(self, jobs) -> None:
        old = await running(jobs)
        done, run = old.succeed(token=old.version, now=at(1))
        await jobs.finish([Finished(job=done, run=run)], now=at(1))
        keep = make_job()
        await jobs.add([keep])
        assert await jobs.prune(at(0), 10) == 0
        assert await jobs.prune(at(2), 10) == 1
        with pytest.raises(JobNotFound):
            await jobs.get(old.id)
        assert (await jobs.get(keep.id)).state is State.QUEUED

    async def test_save_many_writes_current_versions_and_refuses_the_rest(self, jobs) -> None:
        waiting, moved, busy = make_job(), make_job(), await running(jobs)
        await jobs.add([waiting, moved])
        await jobs.save(*moved.cancel(now=at(1)))
        stale = Finished(job=moved.cancel(now=at(2))[0], run=None)
        unknown = Finished(job=make_job().cancel(now=at(2))[0], run=None)
        cancelled, run = busy.cancel(now=at(2))
        changes = [Finished(job=waiting.cancel(now=at(2))[0], run=None), stale, Finished(job=cancelled, run=run),
                   unknown]
        assert sorted((await jobs.save_many(changes)).refused) == sorted([moved.id, unknown.job.id])
        assert (await jobs.get(waiting.id)).state is State.CANCELLED
        assert (await jobs.get(moved.id)).finished_at == at(1)
        assert await jobs.get(busy.id) == cancelled
        assert [r.outcome for r in await jobs.runs(busy.id)] == [Outcome.CANCELLED]
        assert (await jobs.save_many([])).refused == []

    async def test_throughput_counts_finished_jobs_per_queue_state_and_bucket(self, jobs) -> None:
        async def finish(at_seconds: float, queue: str, ok: bool = True) -> None:
            job = await running(jobs, at(at_seconds - 1), queue=queue, max_attempts=1)
            done, run = (job.succeed(token=job.version, now=at(at_seconds)) if ok
                         else job.fail(token=job.version, now=at(at_seconds), error="boom"))
            assert (await jobs.finish([Finished(job=done, run=run)], now=at(at_seconds))).refused == []

        await finish(-30, "q1")  # before the window
        await finish(10, "q1")
        await finish(59.5, "q1")
        await finish(60, "q1")
        await finish(75, "q2", ok=False)
        queued = make_job(queue="q1")
        await jobs.add([queued])
        await jobs.save(*queued.cancel(now=at(20)))
        await running(jobs, queue="q2")  # not finished: not counted
        counted = {(t.start, t.queue, t.state): t.count for t in await jobs.throughput(T0, timedelta(minutes=1))}
        assert counted == {(T0, "q1", State.SUCCEEDED): 2, (T0, "q1", State.CANCELLED): 1,
                           (at(60), "q1", State.SUCCEEDED): 1, (at(60), "q2", State.FAILED): 1}
        assert await jobs.throughput(at(120), timedelta(minutes=1)) == []


def make_schedule(now: datetime = T0, name: str = "nightly", **spec: object) -> Schedule:
    fields: dict[str, object] = {"name": name, "job": JobSpec(task="noop"), "interval_seconds": 60}
    fields.update(spec)
    return Schedule.create(new_id(now), ScheduleSpec(**fields), now=now)  # type: ignore[arg-type]


def planner(now: datetime):
    return lambda schedule, previous: schedule.plan(now=now, previous=previous, new_id=new_id)


class ScheduleRepositoryContract:
    async def test_add_get_by_id_or_name(self, schedules) -> None:
        schedule = make_schedule(cron="0 3 * * *", interval_seconds=None, timezone="Europe/Berlin")
        await schedules.add(schedule)
        assert await schedules.get(schedule.id) == schedule
        assert await schedules.get("nightly") == schedule
        with pytest.raises(ScheduleNotFound):
            await schedules.get("nope")

    async def test_duplicate_name_is_refused(self, schedules) -> None:
        await schedules.add(make_schedule())
        with pytest.raises(DuplicateSchedule):
            await schedules.add(make_schedule())

    async def test_save_is_compare_and_set_and_checks_names(self, schedules) -> None:
        a, b = make_schedule(name="a"), make_schedule(name="b")
        await schedules.add(a)
        await schedules.add(b)
        paused = a.pause(now=at(1))
        await schedules.save(paused)
        with pytest.raises(StaleWrite):
            await schedules.save(a.pause(now=at(2)))
        from attrs import evolve
        renamed = evolve(b, spec=evolve(b.spec, name="a"), version=b.version + 1)
        with pytest.raises(DuplicateSchedule):
            await schedules.save(renamed)

    async def test_list_pages(self, schedules) -> None:
        made = [make_schedule(at(i), name=f"s{i}") for i in range(7)]
        for s in made:
            await schedules.add(s)
        first = await schedules.list(limit=4, cursor=None)
        second = await schedules.list(limit=4, cursor=first.next_cursor)
        assert [s.id for s in first.items + second.items] == [s.id for s in reversed(made)]
        assert second.next_cursor is None

    async def test_delete_keeps_past_jobs(self, jobs, schedules) -> None:
        schedule = make_schedule()
        await schedules.add(schedule)
        [job] = (await schedules.fire_due(at(60), 10, planner(at(60)))).jobs
        await schedules.delete(schedule.id)
        with pytest.raises(ScheduleNotFound):
            await schedules.get(schedule.id)
        assert (await jobs.get(job.id)).task == "noop"

    async def test_fire_due_fires_each_occurrence_once(self, jobs, schedules) -> None:
        schedule = make_schedule()
        await schedules.add(schedule)
        assert (await schedules.fire_due(at(59), 10, planner(at(59)))).jobs == []
        [job] = (await schedules.fire_due(at(60), 10, planner(at(60)))).jobs
        assert job.schedule_id == schedule.id and job.scheduled_for == at(60) and job.state is State.QUEUED
        assert (await schedules.fire_due(at(60), 10, planner(at(60)))).jobs == []
        stored = await schedules.get(schedule.id)
        assert stored.next_fire_at == at(120) and stored.last_job_id == job.id and stored.fired_count == 1
        assert await jobs.get(job.id) == job
        assert await schedules.next_due_at() == at(120)

    async def test_record_skips_an_occurrence_that_has_a_job(self, schedules) -> None:
        schedule = make_schedule()
        await schedules.add(schedule)
        stale_copy = await schedules.get(schedule.id)
        await schedules.fire_due(at(60), 10, planner(at(60)))
        replay = stale_copy.plan(now=at(60), previous=None, new_id=new_id)
        current = await schedules.get(schedule.id)
        from attrs import evolve
        forced = evolve(replay, schedule=evolve(replay.schedule, version=current.version + 1))
        assert (await schedules.record(forced)).jobs == []
        after = await schedules.get(schedule.id)
        assert after.last_job_id == current.last_job_id  # the job that holds the occurrence
        ledger = (await schedules.occurrences(schedule.id, limit=10, cursor=None)).items
        assert [e.job_id for e in ledger] == [current.last_job_id]

    async def test_ledger_is_newest_first_and_paged(self, schedules) -> None:
        schedule = make_schedule(misfire_policy="skip", misfire_grace_seconds=0)
        await schedules.add(schedule)
        await schedules.fire_due(at(60), 10, planner(at(60)))
        await schedules.fire_due(at(600), 10, planner(at(600)))  # 120..540 missed, 600 fired
        page = await schedules.occurrences(schedule.id, limit=1, cursor=None)
        rest = await schedules.occurrences(schedule.id, limit=10, cursor=page.next_cursor)
        entries = page.items + rest.items
        assert [e.fate for e in entries] == [Fate.FIRED, Fate.MISSED, Fate.FIRED]
        assert entries[1].count == 8 and entries[1].scheduled_for == at(120) and entries[1].until == at(540)
        assert await schedules.fired_for(schedule.id, at(0), at(600)) == {at(60), at(600)}

    async def test_cancel_other_cancels_the_running_job(self, jobs, schedules) -> None:
        schedule = make_schedule(overlap_policy="cancel_other")
        await schedules.add(schedule)
        [first] = (await schedules.fire_due(at(60), 10, planner(at(60)))).jobs
        await jobs.claim([first.id], worker_id="w", now=at(61), lease_seconds=LEASE)
        [second] = (await schedules.fire_due(at(120), 10, planner(at(120)))).jobs
        assert (await jobs.get(first.id)).state is State.CANCELLED
        assert [r.outcome for r in await jobs.runs(first.id)] == [Outcome.CANCELLED]
        assert second.scheduled_for == at(120)

    async def test_paused_schedules_are_not_due(self, schedules) -> None:
        schedule = make_schedule()
        await schedules.add(schedule)
        await schedules.save(schedule.pause(now=at(1)))
        assert (await schedules.fire_due(at(600), 10, planner(at(600)))).jobs == []
        assert await schedules.next_due_at() is None
