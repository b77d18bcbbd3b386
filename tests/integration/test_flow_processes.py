"""Flow control with real processes (SPEC §6, issue 7): several `gnomon worker`s and a `gnomon scheduler` on the
test's own PostgreSQL database and Redis prefix. Limits are judged from the run history: the most [started_at,
finished_at] intervals of a key or a queue that overlap, and the starts of a rate-limited queue per 30 s.

What is printed (pytest -s) are the measurements; the assertions are the limits, and orders of events, not speeds.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from psycopg import sql as compose

from adapters.postgres.pool import connection
from domain.job import Outcome, State
from tests.integration.processes import gnomon, gnomon_env
from tests.integration.stack import Client, client, new_prefix, spec

FAST: Final = {"lease_seconds": 2, "heartbeat_seconds": 0.5, "dispatch_timeout_seconds": 5}
Interval = tuple[datetime, datetime]


async def intervals(jobs: Client, by: str) -> dict[str, list[Interval]]:
    """Every attempt's [started_at, finished_at], grouped by the job's `by` column (concurrency_key or queue)."""
    query = compose.SQL("SELECT j.{} AS name, r.started_at, r.finished_at FROM runs AS r JOIN jobs AS j"
                        " ON j.id = r.job_id WHERE j.{} IS NOT NULL").format(compose.Identifier(by),
                                                                            compose.Identifier(by))
    async with connection(jobs.runtime.adapters.pool()) as conn:
        rows = await (await conn.execute(query)).fetchall()
    found: dict[str, list[Interval]] = defaultdict(list)
    for row in rows:
        found[row["name"]].append((row["started_at"], row["finished_at"]))
    return found


def most_at_once(spans: list[Interval]) -> int:
    """The most intervals that overlap at one instant (one ending when another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


async def configure(jobs: Client, queue: str, **changes: Any) -> None:
    await jobs.runtime.use_cases.update_queue()(queue, changes)


async def until_done(jobs: Client, total: int, timeout: float) -> None:
    await jobs.until_all(State.SUCCEEDED, total, timeout=timeout)


async def test_key_and_queue_limits_hold_under_load_across_three_workers(pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST)
    short = {"seconds": 0.05}
    async with client(pg_url, redis_url, prefix) as jobs:
        await configure(jobs, "capped", max_running=5)
        specs = ([spec("sleep", payload=short, concurrency_key="a", concurrency_limit=2)] * 60
                 + [spec("sleep", payload=short, concurrency_key="b", concurrency_limit=3)] * 60
                 + [spec("sleep", payload=short, queue="capped")] * 80
                 + [spec("sleep", payload=short, queue="capped", concurrency_key="c", concurrency_limit=4)] * 20
                 + [spec("noop")] * 200)
        with gnomon("scheduler", env=env) as scheduler, \
                gnomon("worker", "--queues", "default,capped", "--concurrency", "16", env=env) as w1, \
                gnomon("worker", "--queues", "capped,default", "--concurrency", "16", env=env) as w2, \
                gnomon("worker", "--queues", "default,capped", "--concurrency", "16", env=env) as w3:
            for process in (scheduler, w1, w2, w3):
                process.wait_for_log("ready")
            await jobs.submit(*specs)
            await until_done(jobs, len(specs), timeout=50)
        by_key, by_queue = await intervals(jobs, "concurrency_key"), await intervals(jobs, "queue")
    worst = {key: most_at_once(spans) for key, spans in by_key.items()}
    worst["queue capped"] = most_at_once(by_queue["capped"])
    print(f"\nmost running at once (limits a 2, b 3, c 4, queue capped 5): {worst}")
    assert worst["a"] <= 2 and worst["b"] <= 3 and worst["c"] <= 4 and worst["queue capped"] <= 5, worst
    assert worst["a"] == 2 and worst["queue capped"] == 5, f"the limits were never reached: nothing was tested {worst}"


async def test_max_per_second_holds_within_ten_percent_over_30_seconds(pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST)
    rate, window = 20.0, 30.0
    async with client(pg_url, redis_url, prefix) as jobs:
        await configure(jobs, "rated", max_per_second=rate)
        await jobs.submit(*[spec("noop", queue="rated")] * 900)  # more than the window lets start
        with gnomon("worker", "--queues", "rated", "--concurrency", "16", env=env) as w1, \
                gnomon("worker", "--queues", "rated", "--concurrency", "16", env=env) as w2, \
                gnomon("worker", "--queues", "rated", "--concurrency", "16", env=env) as w3:
            for process in (w1, w2, w3):
                process.wait_for_log("ready")
            await asyncio.sleep(window + 3)
        starts = sorted(start for start, _ in (await intervals(jobs, "queue"))["rated"])
    first = starts[0]
    in_window = [s for s in starts if s < first + timedelta(seconds=window)]
    per_second = defaultdict(int)
    for start in in_window:
        per_second[int((start - first).total_seconds())] += 1
    measured = len(in_window) / window
    print(f"\n{len(in_window)} starts in {window:g} s: {measured:.2f}/s for a limit of {rate:g}/s "
          f"(a burst of {rate:g} is allowed at first); per second: {[per_second[s] for s in range(int(window))]}")
    assert len(in_window) <= rate * window * 1.1, f"{measured:.2f}/s breaks the limit of {rate:g}/s"
    assert len(in_window) >= rate * window * 0.9, f"{measured:.2f}/s: the limiter holds back more than it should"


async def test_a_worker_killed_while_holding_a_slot_frees_it_when_its_lease_expires(
        pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST)
    async with client(pg_url, redis_url, prefix) as jobs:
        with gnomon("scheduler", env=env) as scheduler, gnomon("worker", env=env) as doomed:
            scheduler.wait_for_log("ready")
            doomed.wait_for_log("ready")
            [long_id] = await jobs.submit(spec("sleep", payload={"seconds": 60}, concurrency_key="account-7",
                                               max_attempts=1))
            await jobs.until(long_id, State.RUNNING)
            [next_id] = await jobs.submit(spec("noop", concurrency_key="account-7"))
            assert (await jobs.job(next_id)).held  # the key's only slot is taken
            doomed.kill()
            lease = (await jobs.job(long_id)).lease  # its last renewal: nobody renews it any more
            assert lease is not None
            with gnomon("worker", env=env) as survivor:
                survivor.wait_for_log("ready")
                done = await jobs.until(next_id, State.SUCCEEDED, timeout=30)
        lost = await jobs.runs(long_id)
    assert [r.outcome for r in lost] == [Outcome.LOST]
    assert done.started_at is not None and done.started_at >= lease.expires_at, (done.started_at, lease.expires_at)
    print(f"\nthe next job of the key started {(done.started_at - lease.expires_at).total_seconds():.2f} s "
          "after the dead worker's lease expired")


async def test_a_paused_queue_starts_nothing_new_lets_running_jobs_finish_and_resumes(
        pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST)
    async with client(pg_url, redis_url, prefix) as jobs:
        with gnomon("worker", "--queues", "p", env=env) as w1, gnomon("worker", "--queues", "p", env=env) as w2:
            w1.wait_for_log("ready")
            w2.wait_for_log("ready")
            [running] = await jobs.submit(spec("sleep", queue="p", payload={"seconds": 2}))
            await jobs.until(running, State.RUNNING)
            await configure(jobs, "p", paused=True)
            await asyncio.sleep(1.5)  # every worker reads the settings at least once a second
            waiting = await jobs.submit(*[spec("noop", queue="p")] * 5)
            await jobs.until(running, State.SUCCEEDED)  # a running job finishes while its queue is paused
            await asyncio.sleep(2)
            paused_states = [(await jobs.job(job_id)).state for job_id in waiting]
            resumed_at = datetime.now(UTC)
            await configure(jobs, "p", paused=False)
            done = [await jobs.until(job_id, State.SUCCEEDED) for job_id in waiting]
    assert paused_states == [State.QUEUED] * 5
    assert all(job.started_at is not None and job.started_at >= resumed_at for job in done)


async def test_one_keys_burst_does_not_starve_another_keys_single_job(pg_url: str, redis_url: str) -> None:
    prefix = new_prefix()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, **FAST)
    async with client(pg_url, redis_url, prefix) as jobs:
        with gnomon("scheduler", env=env) as scheduler, \
                gnomon("worker", "--concurrency", "8", env=env) as w1, \
                gnomon("worker", "--concurrency", "8", env=env) as w2:
            for process in (scheduler, w1, w2):
                process.wait_for_log("ready")
            burst = [spec("sleep", payload={"seconds": 0.01}, concurrency_key="big-customer", concurrency_limit=4)]
            for _ in range(2):
                await jobs.submit(*burst * 5000)
            await jobs.until_all(State.SUCCEEDED, 50, timeout=30)  # the burst is running
            submitted = time.monotonic()
            [small] = await jobs.submit(spec("noop", concurrency_key="small-customer"))
            started = await jobs.until(small, State.RUNNING, State.SUCCEEDED, timeout=30)
            delay = time.monotonic() - submitted
            counts = await jobs.counts()
    left = counts.get("queued", 0) + counts.get("running", 0)
    print(f"\nthe small key's job started {delay * 1000:.0f} ms after its submit, with {left} of the big key's "
          "10,000 jobs still to run")
    assert started.started_at is not None
    assert left >= 5000, "the small key's job waited behind the big key's burst"
