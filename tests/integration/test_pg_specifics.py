"""What the contracts cannot see: several replicas at once on one database, driver errors translated at the
boundary, ids and cursors that name nothing, and the exactly-once backstop of schedule firings."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from attrs import evolve

from adapters.postgres import sql
from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import RECONNECT_MOST, GnomonPool, Pool, Reconnecting, connection, create_pool, open_pool
from adapters.postgres.rows import outcomes_json, uuid_array
from adapters.postgres.schedule_repository import PgScheduleRepository
from application.identity import new_id
from application.ports import Finished, JobFilter
from domain.errors import InvalidInput, JobNotFound, ScheduleNotFound, StaleWrite, Unavailable
from domain.job import Job, JobSpec, State
from domain.retry import Backoff
from domain.schedule import Fate, ScheduleSpec
from tests.contracts.repositories import LEASE, T0, at, make_job, make_schedule, planner
from tests.integration.cluster import Cluster
from tests.integration.conftest import OpenPool

REPLICAS = 3


@pytest.fixture
def jobs(pool: Pool) -> PgJobRepository:
    return PgJobRepository(pool)


@pytest.fixture
def schedules(pool: Pool) -> PgScheduleRepository:
    return PgScheduleRepository(pool)


async def count(pg_url: str, query: str) -> int:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        row = await (await conn.execute(query)).fetchone()
        assert row is not None
        return int(row[0])


# -- replicas -----------------------------------------------------------------------------------------------

async def test_concurrent_promotions_promote_each_job_once(open_pools: OpenPool, jobs: PgJobRepository) -> None:
    made = [make_job(run_at=at(1 + i % 50)) for i in range(300)]
    await jobs.add(made)
    replicas = [PgJobRepository(await open_pools()) for _ in range(REPLICAS)]

    async def drain(repo: PgJobRepository) -> list[str]:
        promoted: list[str] = []
        while batch := await repo.promote_due(at(100), 7):
            promoted += [j.id for j in batch]
        return promoted

    results = await asyncio.gather(*(drain(r) for r in replicas))
    everything = [job_id for result in results for job_id in result]
    assert sorted(everything) == sorted(j.id for j in made)


async def test_concurrent_claims_start_each_job_once(open_pools: OpenPool, jobs: PgJobRepository) -> None:
    made = [make_job() for _ in range(100)]
    await jobs.add(made)
    ids = [j.id for j in made]
    workers = [(f"w{n}", PgJobRepository(await open_pools())) for n in range(REPLICAS)]

    results = await asyncio.gather(*(repo.claim(ids, worker_id=name, now=at(1), lease_seconds=LEASE)
                                     for name, repo in workers))
    claimed = [job for result in results for job in result]
    assert sorted(j.id for j in claimed) == sorted(ids)
    assert all(j.attempt == 1 and j.lease is not None for j in claimed)


async def test_a_claimed_job_carries_every_field_as_stored(jobs: PgJobRepository,
                                                           schedules: PgScheduleRepository) -> None:
    """The claim returns only the columns it did not set (sql.CLAIMED_COLUMNS, of the plain claim and of the gated
    one, which starts the keyed job) and fills in the rest: every field of every claimed job, whatever was submitted
    (payload, queue, priority, attempts, backoff, timeout, keys, a schedule's occurrence, a retried attempt's error,
    instants that differ), must equal the stored row, read in full."""
    schedule = make_schedule()
    await schedules.add(schedule)
    backoff = Backoff(base_seconds=3.5, factor=3.0, max_seconds=99.0, jitter=False)
    made = [
        make_job(payload={"nested": {"list": [1, "two", None]}, "x": 1.5}, queue="other.q", priority=7,
                 max_attempts=5, backoff=backoff, timeout_seconds=12.5, idempotency_key="once",
                 concurrency_limit=4),
        make_job(at(-5), run_at=at(-20)),  # created after it was due: created_at, run_at and dispatch all differ
        Job.create(new_id(T0), JobSpec(task="fired", timeout_seconds=7.0), now=T0, schedule_id=schedule.id,
                   scheduled_for=at(-60)),
        make_job(run_at=at(1)),  # promoted: dispatched after it was created, at its run_at
        make_job(max_attempts=3),  # fails once, retried: attempt 2, the first attempt's error, a later version
        make_job(concurrency_key="tenant-7", concurrency_limit=100, priority=3),  # started by the gated claim
    ]
    await jobs.add(made)
    await jobs.promote_due(at(1), 10)
    [first] = await jobs.claim([made[4].id], worker_id="w0", now=at(1), lease_seconds=LEASE)
    failed, run = first.fail(token=first.version, now=at(2), error="boom")
    assert not (await jobs.finish([Finished(job=failed, run=run)], now=at(2))).refused
    assert await jobs.promote_due(at(100), 10)

    claimed = await jobs.claim([j.id for j in made], worker_id="w1", now=at(101), lease_seconds=LEASE)

    assert [j.id for j in claimed] == [j.id for j in made]
    for job in claimed:
        assert job == await jobs.get(job.id)
        assert job.lease is not None and job.lease.token == job.version and job.lease.worker_id == "w1"
    special, late, fired, promoted, retried, keyed = claimed
    assert (special.payload, special.queue, special.priority, special.max_attempts, special.backoff,
            special.timeout_seconds, special.idempotency_key, special.concurrency_limit) == (
        {"nested": {"list": [1, "two", None]}, "x": 1.5}, "other.q", 7, 5, backoff, 12.5, "once", 4)
    assert (late.run_at, late.created_at, late.dispatched_at) == (at(-20), at(-5), at(-5))
    assert (fired.schedule_id, fired.scheduled_for, fired.timeout_seconds) == (schedule.id, at(-60), 7.0)
    assert (promoted.run_at, promoted.created_at, promoted.dispatched_at) == (at(1), T0, at(1))
    assert (retried.attempt, retried.last_error, retried.version) == (2, "boom", first.version + 3)
    assert (keyed.concurrency_key, keyed.concurrency_limit, keyed.priority) == ("tenant-7", 100, 3)
    assert all(j.attempt == 1 for j in [*claimed[:4], keyed])
    assert retried.lease is not None and special.lease is not None and retried.lease != special.lease
    # what the worker derives from them: when each attempt times out
    assert [j.deadline() for j in claimed] == [at(101 + j.timeout_seconds) for j in made]


async def test_claims_and_outcomes_touch_only_their_own_rows_whatever_the_statistics(
        jobs: PgJobRepository, pg_url: str) -> None:
    """With thousands queued or running and no statistics (a fresh table), a claim or finish of a few jobs
    must look them up by primary key, not walk every queued or running job through a partial index."""
    made = [make_job() for _ in range(3000)]
    await jobs.add(made)
    claimed = await jobs.claim([j.id for j in made[:2000]], worker_id="w", now=at(1), lease_seconds=LEASE)
    done = [Finished(job=new, run=run) for new, run in
            (j.succeed(token=j.version, now=at(2)) for j in claimed[:2])]
    claim = {"ids": [uuid.UUID(j.id) for j in made[2000:2002]], "worker": "w", "now": at(2), "expires_at": at(99),
             "limited": []}
    finish = {"ids": uuid_array(f.job.id for f in done), "jobs": outcomes_json(done), "now": at(2)}
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        for query, params in ((sql.CLAIM, claim), (sql.FINISH_JOBS, finish)):
            plan = await (await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params)).fetchone()
            scans = list(_scans(plan[0][0]["Plan"]))
            assert all(rows <= 10 for _, rows in scans), scans  # 2 ids, maybe a few row versions each
            await conn.rollback()


async def test_a_big_finish_joins_its_outcomes_to_their_jobs_once(jobs: PgJobRepository, pg_url: str) -> None:
    """A finish of 800 outcomes among 20,000 jobs, without statistics (a fresh table): each job meets its record by a
    hash join or a lookup, never by a loop over every record per job (sql.FINISH_JOBS: 0.2-0.75 s for such a batch,
    and the worker's next batch the bigger for it)."""
    made = [make_job() for _ in range(20_000)]
    for i in range(0, len(made), 5000):
        await jobs.add(made[i:i + 5000])
    claimed: list[Job] = []
    for i in range(0, 800, 64):
        claimed += await jobs.claim([j.id for j in made[i:min(i + 64, 800)]], worker_id="w", now=at(1),
                                    lease_seconds=LEASE)
    done = [Finished(job=new, run=run) for new, run in (j.succeed(token=j.version, now=at(2)) for j in claimed)]
    finish = {"ids": uuid_array(f.job.id for f in done), "jobs": outcomes_json(done), "now": at(2)}
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        plan = await (await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql.FINISH_JOBS, finish)).fetchone()
        await conn.rollback()
    assert plan is not None
    loops = [(node.get("CTE Name"), node["Actual Loops"]) for node in _nodes(plan[0][0]["Plan"])
             if node["Node Type"] == "CTE Scan"]
    assert loops and all(n == 1 for _, n in loops), loops


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _scans(node: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """(index or relation, rows it produced per loop) of every scan in an EXPLAIN (FORMAT JSON) plan."""
    if "Scan" in node["Node Type"] and "Function" not in node["Node Type"] and "CTE" not in node["Node Type"]:
        yield node.get("Index Name", node.get("Relation Name", "?")), node["Actual Rows"]
    for child in node.get("Plans", []):
        yield from _scans(child)


async def test_concurrent_scheduler_replicas_fire_each_occurrence_once(
        open_pools: OpenPool, schedules: PgScheduleRepository, pg_url: str) -> None:
    for n in range(20):  # 10 occurrences each (60 s apart) are due at 600 s, all within the grace
        await schedules.add(make_schedule(name=f"s{n}", misfire_grace_seconds=100_000, max_catchup=1000,
                                          misfire_policy="run_all"))
    replicas = [PgScheduleRepository(await open_pools()) for _ in range(REPLICAS)]

    async def tick(repo: PgScheduleRepository) -> list[str]:
        fired: list[str] = []
        while batch := (await repo.fire_due(at(600), 3, planner(at(600)))).jobs:
            fired += [j.id for j in batch]
        return fired

    results = await asyncio.gather(*(tick(r) for r in replicas))
    assert sum(len(r) for r in results) == 200
    assert await count(pg_url, "SELECT count(*) FROM jobs") == 200
    assert await count(pg_url, "SELECT count(DISTINCT (schedule_id, scheduled_for)) FROM jobs") == 200
    assert await count(pg_url, "SELECT count(*) FROM occurrences WHERE fate = 'fired'") == 200


# -- the exactly-once backstop ------------------------------------------------------------------------------

async def test_a_replayed_firing_leaves_no_phantom_in_the_ledger(schedules: PgScheduleRepository,
                                                                 jobs: PgJobRepository) -> None:
    schedule = make_schedule()
    await schedules.add(schedule)
    [job] = (await schedules.fire_due(at(60), 10, planner(at(60)))).jobs
    replay = schedule.plan(now=at(60), previous=None, new_id=new_id)
    current = await schedules.get(schedule.id)

    replayed = evolve(replay, schedule=evolve(replay.schedule, version=current.version + 1))
    assert (await schedules.record(replayed)).jobs == []

    ledger = (await schedules.occurrences(schedule.id, limit=10, cursor=None)).items
    assert [(e.fate, e.job_id) for e in ledger] == [(Fate.FIRED, job.id)]
    assert (await schedules.get(schedule.id)).last_job_id == job.id
    assert [j.id for j in (await jobs.list(JobFilter(schedule_id=schedule.id), limit=10, cursor=None)).items] \
        == [job.id]


async def test_a_stale_firing_stores_nothing(schedules: PgScheduleRepository, pg_url: str) -> None:
    schedule = make_schedule()
    await schedules.add(schedule)
    stale = schedule.plan(now=at(60), previous=None, new_id=new_id)
    await schedules.save(schedule.pause(now=at(1)))

    with pytest.raises(StaleWrite):
        await schedules.record(stale)
    assert await count(pg_url, "SELECT count(*) FROM jobs") == 0
    assert await count(pg_url, "SELECT count(*) FROM occurrences") == 0


async def test_submitting_a_job_for_a_fired_occurrence_is_refused(schedules: PgScheduleRepository,
                                                                 jobs: PgJobRepository) -> None:
    schedule = make_schedule()
    await schedules.add(schedule)
    [job] = (await schedules.fire_due(at(60), 10, planner(at(60)))).jobs
    with pytest.raises(StaleWrite):
        await jobs.add([evolve(make_job(), schedule_id=schedule.id, scheduled_for=job.scheduled_for)])


# -- values survive the trip --------------------------------------------------------------------------------

async def test_a_schedule_with_every_field_set_round_trips(schedules: PgScheduleRepository) -> None:
    template = JobSpec(task="report", payload={"k": [1, 2.5, None]}, queue="reports", priority=9, max_attempts=7,
                       backoff=Backoff(base_seconds=2.5, factor=3, max_seconds=99, jitter=False),
                       timeout_seconds=42.5, concurrency_key="tenant", concurrency_limit=3)
    spec = ScheduleSpec(name="every field", job=template, cron="*/5 9-17 * * 1-5", timezone="America/New_York",
                        misfire_policy="run_all", misfire_grace_seconds=5, max_catchup=3,
                        overlap_policy="buffer_one", jitter_seconds=30, start_at=at(-3600), end_at=at(86400 * 30),
                        max_runs=12)
    schedule = evolve(
        make_schedule(), spec=spec, last_fired_at=at(5), last_job_id=new_id(T0), fired_count=4,
        buffered_for=at(7), recheck_at=at(8),
    ).pause(now=at(10), note="maintenance", until=at(3600))
    await schedules.add(schedule)

    stored = await schedules.get("every field")
    assert stored == schedule
    assert stored.next_fire_at is not None and stored.next_fire_at.tzinfo is UTC


async def test_results_and_errors_round_trip(jobs: PgJobRepository) -> None:
    job = make_job(payload={"text": "naïve ☃", "deep": {"list": [True, False, None, 1e300]}})
    await jobs.add([job])
    [running] = await jobs.claim([job.id], worker_id="w", now=at(1), lease_seconds=LEASE)
    done, run = running.succeed(token=running.version, now=at(2), result=["a", {"b": None}])
    assert (await jobs.finish([Finished(job=done, run=run)], now=at(2))).refused == []
    assert await jobs.get(job.id) == done
    assert (await jobs.runs(job.id))[0].duration_seconds == 1.0


# -- bad input and lost servers -----------------------------------------------------------------------------

async def test_ids_and_cursors_that_name_nothing(jobs: PgJobRepository, schedules: PgScheduleRepository) -> None:
    with pytest.raises(JobNotFound):
        await jobs.get("not-a-uuid")
    with pytest.raises(JobNotFound):
        await jobs.runs("not-a-uuid")
    with pytest.raises(ScheduleNotFound):
        await schedules.get(new_id(T0))
    with pytest.raises(ScheduleNotFound):
        await schedules.delete("not-a-uuid")
    with pytest.raises(InvalidInput):
        await jobs.list(JobFilter(), limit=10, cursor="garbage")
    with pytest.raises(InvalidInput):
        await schedules.occurrences(new_id(T0), limit=10, cursor="garbage")
    assert (await jobs.list(JobFilter(schedule_id="nope"), limit=10, cursor=None)).items == []
    assert await jobs.claim(["nope"], worker_id="w", now=T0, lease_seconds=LEASE) == []
    assert await jobs.renew([("nope", 1)], now=T0, lease_seconds=LEASE) == ["nope"]


async def test_an_unstorable_payload_is_invalid_input_and_stores_nothing(jobs: PgJobRepository) -> None:
    good, bad = make_job(), make_job(payload={"nul": "a\u0000b"})
    with pytest.raises(InvalidInput):
        await jobs.add([good, bad])
    assert (await jobs.list(JobFilter(), limit=10, cursor=None)).items == []


async def test_prune_takes_the_runs_along(jobs: PgJobRepository, pg_url: str) -> None:
    await jobs.add([make_job()])
    [job] = (await jobs.list(JobFilter(), limit=1, cursor=None)).items
    [running] = await jobs.claim([job.id], worker_id="w", now=at(1), lease_seconds=LEASE)
    done, run = running.fail(token=running.version, now=at(2), error="boom", permanent=True)
    await jobs.finish([Finished(job=done, run=run)], now=at(2))
    assert await count(pg_url, "SELECT count(*) FROM runs") == 1

    assert await jobs.prune(datetime(2100, 1, 1, tzinfo=UTC), 10) == 1
    assert await count(pg_url, "SELECT count(*) FROM runs") == 0
    assert (await jobs.list(JobFilter(state=State.FAILED), limit=10, cursor=None)).items == []


async def test_an_unreachable_database_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await open_pool(create_pool("postgresql://root@127.0.0.1:1/none", timeout=1), timeout=1)
    pool = create_pool("postgresql://root@127.0.0.1:1/none", timeout=1)
    await pool.open(wait=False)  # as a process whose database went away after start-up sees it
    try:
        with pytest.raises(Unavailable):
            await PgJobRepository(pool).get(new_id(T0))
        with pytest.raises(Unavailable):
            await PgScheduleRepository(pool).next_due_at()
    finally:
        await pool.close()


async def test_after_a_restart_a_call_is_unavailable_at_most_once_then_the_pool_works(
        throwaway_cluster: Cluster) -> None:
    """Pooled connections are not checked on borrow: a restart kills them all, the first call to draw one
    fails as Unavailable, and that failure sweeps the pool so the next call gets a live connection."""
    pool = create_pool(throwaway_cluster.url("gnomon"), min_size=4, max_size=4, timeout=10)
    await open_pool(pool)
    jobs = PgJobRepository(pool)
    try:
        job = make_job()
        await jobs.add([job])
        await asyncio.gather(*(jobs.get(job.id) for _ in range(8)))  # every connection of the pool has been used
        await asyncio.to_thread(throwaway_cluster.restart, "fast")  # drops every client connection
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(await jobs.get(job.id) == job)
            except Unavailable:
                outcomes.append(False)
        assert outcomes in ([False, True, True], [True, True, True])
    finally:
        await pool.close()


async def test_a_firing_of_a_deleted_schedule_is_not_found(schedules: PgScheduleRepository, pg_url: str) -> None:
    schedule = make_schedule()
    await schedules.add(schedule)
    firing = schedule.plan(now=at(60), previous=None, new_id=new_id)
    await schedules.delete(schedule.id)

    with pytest.raises(ScheduleNotFound):
        await schedules.record(firing)
    assert await count(pg_url, "SELECT count(*) FROM jobs") == 0


async def test_pooled_connections_keep_alive_and_name_themselves(pg_url: str) -> None:
    pool = create_pool(psycopg.conninfo.make_conninfo(pg_url, keepalives_idle=7), max_size=1, name="gnomon-test-pool")
    await open_pool(pool)
    try:
        async with connection(pool) as conn:
            params = conn.info.get_parameters()
            zone = conn.info.timezone
            row = await (await conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")).fetchone()
    finally:
        await pool.close()
    assert row is not None and row["application_name"] == "gnomon-test-pool"
    assert params["keepalives"] == "1" and params["keepalives_count"] == "3"
    assert params["keepalives_idle"] == "7"  # the URL's own value wins over the default
    assert zone is UTC  # the session's time zone: timestamps come back in UTC, converted by nothing


async def test_pooled_connections_read_json_as_json_loads_would(pg_url: str) -> None:
    pool = create_pool(pg_url, max_size=1)
    await open_pool(pool)
    try:
        async with connection(pool) as conn:
            row = await (await conn.execute(
                """SELECT '{"i": 1, "s": "\\u00e9", "l": [null, true, 2.5]}'::jsonb AS usual,
                          jsonb_build_object('big', 1e400 + 0.5, 'int', 1e400, 'tiny', 1e-400) AS huge,
                          '[1]'::json AS plain""")).fetchone()
    finally:
        await pool.close()
    assert row is not None
    assert row["usual"] == {"i": 1, "s": "\u00e9", "l": [None, True, 2.5]}
    assert row["huge"] == {"big": float("inf"), "int": 10**400, "tiny": 0.0}  # what json.loads makes of them
    assert row["plain"] == [1]


async def test_copied_jobs_keep_text_that_copy_escapes(jobs: PgJobRepository) -> None:
    odd = "a\\tb\tc\nd\re\\\\.\n\\.\n\\N é \"q\""
    specs = [JobSpec(task=odd, payload={odd: [odd, 1.5, None], "n": "\\N"}, concurrency_key=odd),
             JobSpec(task="noop", payload={}, run_at=datetime(2999, 1, 1, tzinfo=UTC))]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    made = [s.job for s in await jobs.add(Job.create_many([new_id(now), new_id(now)], specs, now=now))]
    assert [await jobs.get(job.id) for job in made] == made


def test_the_pool_tries_again_soon_and_at_least_every_second_after_a_failed_connection() -> None:
    attempt = Reconnecting(timeout=300)
    delays = []
    for now in range(8):
        attempt.update_delay(float(now))
        delays.append(attempt.delay)
    assert 0.09 <= delays[0] <= 0.11 and delays[1:4] == pytest.approx([delays[0] * 2 ** k for k in (1, 2, 3)])
    assert delays[4:] == [RECONNECT_MOST] * 4
    assert isinstance(create_pool("postgresql://root@127.0.0.1:1/none"), GnomonPool)
