"""Contract suite of flow control (SPEC §6) for JobRepository and QueueSettingsRepository: the same tests run on the
in-memory adapters (tests/unit) and on PostgreSQL (tests/integration). Subclasses provide the fixtures `jobs`,
`schedules` and `queue_settings` (sharing one store)."""

from __future__ import annotations

from datetime import timedelta

from application.ports import Finished
from domain.flow import QueueSettings
from domain.job import Hold, Job, JobSpec, State
from tests.contracts.repositories import LEASE, T0, at, make_job, make_schedule, planner


async def claim(jobs, items: list[Job], now=T0, worker: str = "w1", limited: tuple[str, ...] = ()) -> list[Job]:
    return await jobs.claim([j.id for j in items], worker_id=worker, now=now, lease_seconds=LEASE, limited=limited)


def succeed(job: Job, now=T0) -> Finished:
    done, run = job.succeed(token=job.version, now=now)
    return Finished(job=done, run=run)


def keyed(n: int, *, key: str = "k", limit: int = 1, **spec: object) -> list[Job]:
    """n queued jobs of one key, created one second apart (so their run_at gives their order)."""
    return [make_job(at(i), concurrency_key=key, concurrency_limit=limit, **spec) for i in range(n)]


async def stored(jobs, items: list[Job]) -> list[Job]:
    return [await jobs.get(j.id) for j in items]


class FlowControlContract:
    async def test_submit_dispatches_a_key_up_to_its_limit_and_holds_the_rest(self, jobs) -> None:
        made = [*keyed(5, limit=2), make_job(concurrency_key="other")]
        out = [s.job for s in await jobs.add(made)]
        assert [j.held for j in out] == [False, False, True, True, True, False]
        assert all(j.held_for is Hold.KEY and j.held_at is not None and j.state is State.QUEUED for j in out[2:5])
        assert await stored(jobs, made) == out

    async def test_the_claim_starts_a_key_within_its_limit_in_priority_order(self, jobs) -> None:
        made = [*keyed(4, limit=2, key="k"), make_job(at(9), concurrency_key="k", concurrency_limit=2, priority=5)]
        free = make_job()
        await jobs.add([*made, free])  # made[4] and made[0] dispatched, the others held (a duplicate may pop them)
        started = await claim(jobs, [*made, free], now=at(10))
        assert sorted(j.id for j in started) == sorted([made[4].id, made[0].id, free.id])
        assert [j.held_for for j in await stored(jobs, made[1:4])] == [Hold.KEY] * 3
        assert await claim(jobs, made[1:4], now=at(11)) == []  # still two running: nothing more

    async def test_finishing_a_keyed_job_wakes_the_next_held_one(self, jobs) -> None:
        made = keyed(3, limit=1)
        await jobs.add(made)
        [first] = await claim(jobs, made, now=at(5))
        recorded = await jobs.finish([succeed(first, at(6))], now=at(6))
        assert recorded.refused == []
        [woken] = recorded.woken
        assert woken.id == made[1].id and not woken.held and woken.dispatched_at == at(6)
        assert await jobs.get(woken.id) == woken
        assert (await jobs.get(made[2].id)).held_for is Hold.KEY

    async def test_a_slot_frees_itself_when_its_lease_expires(self, jobs) -> None:
        made = keyed(2, limit=1)
        await jobs.add(made)
        [first] = await claim(jobs, made[:1], now=at(5))
        assert await claim(jobs, made[1:], now=at(5 + LEASE - 1)) == []
        [second] = await claim(jobs, made[1:], now=at(5 + LEASE))  # the first worker is presumed lost
        assert second.id == made[1].id and first.lease is not None

    async def test_a_cancel_frees_the_slot_of_its_key(self, jobs) -> None:
        made = keyed(3, limit=1)
        await jobs.add(made)
        [first] = await claim(jobs, made, now=at(5))
        [woken] = await jobs.save(*first.cancel(now=at(6)))
        assert woken.id == made[1].id and not woken.held
        cancelled = (await jobs.get(made[1].id)).cancel(now=at(7))[0]
        recorded = await jobs.save_many([Finished(job=cancelled, run=None)])
        assert recorded.refused == [] and [j.id for j in recorded.woken] == [made[2].id]

    async def test_promotion_gates_keyed_jobs_like_a_submit(self, jobs) -> None:
        made = [make_job(run_at=at(10 + i), concurrency_key="k", concurrency_limit=2) for i in range(4)]
        await jobs.add(made)
        promoted = await jobs.promote_due(at(20), 10)
        assert [j.id for j in promoted] == [j.id for j in made]
        assert [j.held for j in promoted] == [False, False, True, True]
        assert [j.held for j in await stored(jobs, made)] == [False, False, True, True]

    async def test_max_running_limits_a_queue_across_workers(self, jobs, queue_settings) -> None:
        await queue_settings.upsert(QueueSettings(queue="q", max_running=2, updated_at=T0))
        made = [make_job(at(i), queue="q") for i in range(4)]
        await jobs.add(made)
        first = await claim(jobs, made[:3], now=at(5), limited=("q",))
        assert [j.id for j in first] == [made[0].id, made[1].id]
        assert await claim(jobs, made[2:], now=at(6), worker="w2", limited=("q",)) == []
        assert [j.held_for for j in await stored(jobs, made[2:])] == [Hold.QUEUE, Hold.QUEUE]
        recorded = await jobs.finish([succeed(first[0], at(7))], now=at(7), limited=("q",))
        assert [j.id for j in recorded.woken] == [made[2].id]

    async def test_a_paused_queue_starts_nothing_and_its_resume_wakes_it(self, jobs, queue_settings) -> None:
        await queue_settings.upsert(QueueSettings(queue="q", paused=True, updated_at=T0))
        popped, stale = make_job(queue="q"), make_job(queue="q")
        await jobs.add([popped, stale])
        assert await claim(jobs, [popped], now=at(1), limited=("q",)) == []
        assert (await jobs.get(popped.id)).held_for is Hold.QUEUE
        assert await jobs.redispatch(at(40), older_than=at(10), limit=10) == []  # held, not sent again
        assert (await jobs.get(stale.id)).held_for is Hold.QUEUE
        assert await jobs.wake(at(41), limit=10, queue="q") == []  # still paused
        await queue_settings.upsert(QueueSettings(queue="q", paused=False, updated_at=at(42)))
        woken = await jobs.wake(at(42), limit=10, queue="q")
        assert sorted(j.id for j in woken) == sorted([popped.id, stale.id])
        assert all(not j.held and j.dispatched_at == at(42) for j in woken)
        assert len(await claim(jobs, woken, now=at(43), limited=())) == 2

    async def test_the_sweep_wakes_held_jobs_whose_wake_up_was_lost(self, jobs) -> None:
        made = keyed(3, limit=1)
        await jobs.add(made)
        [first] = await claim(jobs, made, now=at(5))
        expiry = at(5 + LEASE)  # its worker is lost: nobody finishes it, nobody wakes the held ones
        assert await jobs.wake(expiry, limit=10, held_before=at(5)) == []  # held again by the claim at 5
        [woken] = await jobs.wake(expiry, limit=10, held_before=expiry)
        assert woken.id == made[1].id
        assert await jobs.wake(expiry + timedelta(seconds=1), limit=10, held_before=expiry) == []  # dispatched
        assert first.state is State.RUNNING

    async def test_queue_settings_default_store_and_list(self, queue_settings) -> None:
        assert await queue_settings.get("mail") == QueueSettings(queue="mail")
        assert await queue_settings.all() == []
        settings = QueueSettings(queue="mail", max_running=5, max_per_second=2.5, paused=True, updated_at=T0)
        await queue_settings.upsert(settings)
        await queue_settings.upsert(QueueSettings(queue="a", updated_at=at(1)))
        assert await queue_settings.get("mail") == settings
        changed = settings.change(now=at(2), max_running=None, paused=False)
        await queue_settings.upsert(changed)
        assert [s.queue for s in await queue_settings.all()] == ["a", "mail"]
        assert await queue_settings.get("mail") == changed

    async def test_a_schedules_jobs_obey_the_key_of_its_template(self, jobs, schedules) -> None:
        schedule = make_schedule(job=JobSpec(task="noop", concurrency_key="nightly-report", concurrency_limit=1))
        await schedules.add(schedule)
        [first] = (await schedules.fire_due(at(60), 10, planner(at(60)))).jobs
        assert not first.held
        await jobs.claim([first.id], worker_id="w", now=at(61), lease_seconds=600)  # alive at the next firing
        [second] = (await schedules.fire_due(at(120), 10, planner(at(120)))).jobs  # the first still runs
        assert second.held_for is Hold.KEY and (await jobs.get(second.id)).held_for is Hold.KEY
