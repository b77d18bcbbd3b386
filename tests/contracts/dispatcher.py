"""What every Dispatcher must do. Subclass in a test module and provide a `dispatcher` fixture, built with a
pace of PACE_SECONDS.

Batches may stop short of `limit` (the Redis adapter never mixes priorities in one batch), so order is
checked on the sequence a worker sees when it pops until nothing is left.

The ordering rule (docs/design.md, "Dispatch on Redis"): priorities are strict; within a priority the k-th id
of a push goes as if pushed k * pace later, so a batch keeps its order, single pushes are FIFO, and an id pushed
alone after a batch overtakes the batch's tail. PACE_SECONDS is wide on purpose: a batch of BATCH ids spans
GUARD_SECONDS, far longer than a test takes between two pushes, so the order under test never depends on timing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from application.ports import Dispatcher, Promoted
from domain.job import Job

T0 = datetime(2025, 1, 1, tzinfo=UTC)
GUARD_SECONDS = 10.0  # turns a hang into a failure; never reached by a passing test
PACE_SECONDS = 0.5
BATCH = 21  # its last id is scored GUARD_SECONDS after its first
SLOW = 0.001  # tokens per second: none comes back within a test


def job(job_id: str, *, queue: str = "default", priority: int = 0) -> Job:
    return Job(id=job_id, task="noop", payload={}, queue=queue, priority=priority, run_at=T0,
               created_at=T0, updated_at=T0)


async def drain(dispatcher: Dispatcher, queues: list[str], *, limit: int = 100) -> list[list[str]]:
    """Pop without waiting until nothing comes back; the batches, in order."""
    batches = []
    while batch := await dispatcher.pop(queues, limit=limit, timeout=0):
        assert 0 < len(batch) <= limit
        batches.append(batch)
    return batches


def flat(batches: list[list[str]]) -> list[str]:
    return [job_id for batch in batches for job_id in batch]


class DispatcherContract:
    async def test_highest_priority_comes_first(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job("a", priority=0), job("b", priority=5), job("c", priority=9)])
        await dispatcher.push([job("d", priority=5), job("e", priority=0), job("f", priority=9)])

        assert flat(await drain(dispatcher, ["default"])) == ["c", "f", "b", "d", "a", "e"]

    async def test_promoted_values_are_pushed_like_jobs(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job("a", priority=2), Promoted(id="b", queue="default", priority=7)])
        await dispatcher.push([Promoted(id="c", queue="other", priority=0)])

        assert flat(await drain(dispatcher, ["default", "other"])) == ["b", "a", "c"]

    async def test_priorities_are_strict_whatever_the_push_order(self, dispatcher: Dispatcher) -> None:
        low = [f"low-{i:02}" for i in range(BATCH)]
        high = [f"high-{i:02}" for i in range(BATCH)]
        await dispatcher.push([job(i, priority=2) for i in low])
        await dispatcher.push([job("urgent", priority=9)])
        await dispatcher.push([job(i, priority=5) for i in high])
        await dispatcher.push([job("lone-low", priority=2)])

        seen = flat(await drain(dispatcher, ["default"], limit=4))

        assert seen[:BATCH + 1] == ["urgent", *high]
        assert sorted(seen[BATCH + 1:]) == sorted([*low, "lone-low"])

    async def test_a_batch_keeps_its_order(self, dispatcher: Dispatcher) -> None:
        ids = [f"j{i:03}" for i in range(300)]  # not in any sorted order of their own
        ids = ids[150:] + ids[:150]
        await dispatcher.push([job(i, priority=3) for i in ids])

        assert flat(await drain(dispatcher, ["default"], limit=7)) == ids

    async def test_single_pushes_are_fifo(self, dispatcher: Dispatcher) -> None:
        ids = [f"single-{i:02}" for i in range(12)][::-1]
        for job_id in ids:
            await dispatcher.push([job(job_id, priority=3)])

        assert flat(await drain(dispatcher, ["default"], limit=5)) == ids

    async def test_a_lone_later_job_overtakes_the_tail_of_an_earlier_batch(self, dispatcher: Dispatcher) -> None:
        batch = [f"batch-{i:02}" for i in range(BATCH)]
        await dispatcher.push([job(i, priority=3) for i in batch])
        await dispatcher.push([job("lone", priority=3)])

        seen = flat(await drain(dispatcher, ["default"], limit=5))

        assert [i for i in seen if i != "lone"] == batch
        assert seen.index("lone") < seen.index(batch[-1])

    async def test_two_batches_interleave_each_in_its_own_order(self, dispatcher: Dispatcher) -> None:
        first = [f"first-{i:02}" for i in range(BATCH)]
        second = [f"second-{i:02}" for i in range(BATCH)]
        await dispatcher.push([job(i, priority=3) for i in first])
        await dispatcher.push([job(i, priority=3) for i in second])

        seen = flat(await drain(dispatcher, ["default"], limit=5))

        assert [i for i in seen if i in first] == first
        assert [i for i in seen if i in second] == second
        assert seen.index(second[0]) < seen.index(first[-1])  # the first batch is not a wall in front of it

    async def test_limit_is_respected(self, dispatcher: Dispatcher) -> None:
        ids = [f"j{i}" for i in range(10)]
        await dispatcher.push([job(i) for i in ids])

        assert await dispatcher.pop(["default"], limit=3, timeout=0) == ids[:3]
        assert await dispatcher.size("default") == 7
        assert flat(await drain(dispatcher, ["default"], limit=4)) == ids[3:]

    async def test_limit_below_one_takes_nothing(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job("a")])

        assert await dispatcher.pop(["default"], limit=0, timeout=0) == []
        assert await dispatcher.pop([], limit=5, timeout=0) == []
        assert await dispatcher.size("default") == 1

    async def test_queues_are_served_in_the_order_given(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job("low-1", queue="low", priority=9), job("high-1", queue="high")])
        await dispatcher.push([job("high-2", queue="high"), job("low-2", queue="low")])

        # The queue order wins over priority: low-1 has priority 9 but waits until "high" is empty.
        assert await dispatcher.pop(["high", "low"], limit=10, timeout=0) == ["high-1", "high-2"]
        assert flat(await drain(dispatcher, ["high", "low"])) == ["low-1", "low-2"]
        await dispatcher.push([job("low-3", queue="low"), job("high-3", queue="high")])
        assert flat(await drain(dispatcher, ["low", "high"])) == ["low-3", "high-3"]

    async def test_a_batch_comes_from_one_queue(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job("a1", queue="a"), job("b1", queue="b"), job("a2", queue="a")])

        assert await dispatcher.pop(["b", "a"], limit=10, timeout=0) == ["b1"]
        assert await dispatcher.size("a") == 2

    async def test_many_queues(self, dispatcher: Dispatcher) -> None:
        queues = [f"queue-{n:02}" for n in range(40)]
        await dispatcher.push([job(f"{q}/{i}", queue=q, priority=i % 10) for q in queues for i in range(3)])
        sizes = [await dispatcher.size(q) for q in queues]

        seen = flat(await drain(dispatcher, list(reversed(queues))))

        assert sizes == [3] * 40
        assert [job_id.split("/")[0] for job_id in seen] == [q for q in reversed(queues) for _ in range(3)]
        assert [job_id.split("/")[1] for job_id in seen[:3]] == ["2", "1", "0"]
        assert [await dispatcher.size(q) for q in queues] == [0] * 40

    async def test_pop_on_empty_waits_for_the_timeout_then_returns_nothing(
            self, dispatcher: Dispatcher) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()

        assert await dispatcher.pop(["default"], limit=5, timeout=0.2) == []
        # A lower bound only (10 ms of slack for clock granularity): slowness lengthens it, never shortens.
        assert loop.time() - started >= 0.19

    async def test_a_tiny_or_zero_timeout_never_blocks_forever(self, dispatcher: Dispatcher) -> None:
        for timeout in (0.0, -1.0, 0.0004, 0.005):
            popped = dispatcher.pop(["default"], limit=5, timeout=timeout)
            assert await asyncio.wait_for(popped, GUARD_SECONDS) == []

    async def test_a_waiting_pop_is_woken_by_a_push_from_another_task(self, dispatcher: Dispatcher) -> None:
        waiting = asyncio.create_task(dispatcher.pop(["other", "default"], limit=5, timeout=GUARD_SECONDS))
        await asyncio.sleep(0.1)  # let the pop start waiting (not an assertion: it only makes the test stricter)
        assert not waiting.done()

        await asyncio.create_task(dispatcher.push([job("late", priority=4)]))

        assert await waiting == ["late"]

    async def test_one_id_goes_to_one_of_two_waiting_pops(self, dispatcher: Dispatcher) -> None:
        pops = [asyncio.create_task(dispatcher.pop(["default"], limit=5, timeout=0.5)) for _ in range(2)]
        await asyncio.sleep(0.05)

        await dispatcher.push([job("only")])

        assert sorted(await asyncio.gather(*pops)) == [[], ["only"]]

    async def test_a_repushed_id_keeps_its_place_and_is_not_duplicated(self, dispatcher: Dispatcher) -> None:
        # What PostgreSQL's re-dispatch does to an id still waiting: nothing changes.
        batch = [f"batch-{i:02}" for i in range(BATCH)]
        await dispatcher.push([job(i, priority=3) for i in batch])
        await dispatcher.push([job(batch[-1], priority=3)])
        await dispatcher.push([job(batch[-2], priority=3), job(batch[-1], priority=3)])

        assert await dispatcher.size("default") == BATCH
        assert flat(await drain(dispatcher, ["default"])) == batch

    async def test_an_id_already_popped_can_be_pushed_again(self, dispatcher: Dispatcher) -> None:
        # A worker killed after its pop: the re-dispatch sends the id again, and it must arrive.
        await dispatcher.push([job("again"), job("again")])

        assert await dispatcher.pop(["default"], limit=5, timeout=0) == ["again"]
        await dispatcher.push([job("again")])
        assert await dispatcher.pop(["default"], limit=5, timeout=0) == ["again"]

    async def test_size_counts_every_priority_of_one_queue(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job(f"p{p}", priority=p) for p in range(10)] + [job("x", queue="other")])

        assert await dispatcher.size("default") == 10
        assert await dispatcher.size("other") == 1
        assert await dispatcher.size("nobody-pushed-here") == 0

        await dispatcher.pop(["default"], limit=1, timeout=0)

        assert await dispatcher.size("default") == 9

    async def test_pushing_nothing_is_a_no_op(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([])

        assert await dispatcher.size("default") == 0

    # -- pop_rated: the queue's token bucket (max_per_second). SLOW refills a token every 1,000 s: the tokens a
    # test sees are the burst's, whatever the machine's speed.

    async def test_a_rated_pop_takes_no_more_ids_than_the_bucket_has_tokens(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job(f"j{i}") for i in range(5)])

        assert await dispatcher.pop_rated("default", limit=2, rate=SLOW, burst=4, timeout=0) == ["j0", "j1"]
        assert await dispatcher.pop_rated("default", limit=10, rate=SLOW, burst=4, timeout=0) == ["j2", "j3"]
        assert await dispatcher.pop_rated("default", limit=10, rate=SLOW, burst=4, timeout=0) == []
        assert await dispatcher.size("default") == 1

    async def test_a_rated_pop_takes_the_highest_priority_first(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job("low", priority=0)])
        await dispatcher.push([job("high", priority=9)])

        assert await dispatcher.pop_rated("default", limit=1, rate=SLOW, burst=4, timeout=0) == ["high"]

    async def test_a_rated_pop_pays_only_for_the_ids_it_finds(self, dispatcher: Dispatcher) -> None:
        assert await dispatcher.pop_rated("default", limit=10, rate=SLOW, burst=3, timeout=0) == []
        await dispatcher.push([job("a")])
        assert await dispatcher.pop_rated("default", limit=10, rate=SLOW, burst=3, timeout=0) == ["a"]
        await dispatcher.push([job(f"j{i}") for i in range(5)])

        assert await dispatcher.pop_rated("default", limit=10, rate=SLOW, burst=3, timeout=0) == ["j0", "j1"]

    async def test_buckets_are_per_queue(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job(f"d{i}") for i in range(3)] + [job(f"o{i}", queue="other") for i in range(3)])

        assert await dispatcher.pop_rated("default", limit=10, rate=SLOW, burst=2, timeout=0) == ["d0", "d1"]
        assert await dispatcher.pop_rated("other", limit=10, rate=SLOW, burst=2, timeout=0) == ["o0", "o1"]

    async def test_a_waiting_rated_pop_gets_a_later_push_and_gives_back_the_tokens_it_did_not_use(
            self, dispatcher: Dispatcher) -> None:
        waiting = asyncio.create_task(
            dispatcher.pop_rated("default", limit=5, rate=SLOW, burst=3, timeout=GUARD_SECONDS))
        await asyncio.sleep(0.1)
        assert not waiting.done()

        await asyncio.create_task(dispatcher.push([job("late")]))

        assert await waiting == ["late"]
        await dispatcher.push([job(f"j{i}") for i in range(5)])
        assert await dispatcher.pop_rated("default", limit=10, rate=SLOW, burst=3, timeout=0) == ["j0", "j1"]

    async def test_a_rated_pop_without_tokens_returns_nothing_within_its_timeout(
            self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job("a"), job("b")])
        assert await dispatcher.pop_rated("default", limit=5, rate=SLOW, burst=1, timeout=0) == ["a"]

        popped = dispatcher.pop_rated("default", limit=5, rate=SLOW, burst=1, timeout=0.05)
        assert await asyncio.wait_for(popped, GUARD_SECONDS) == []
        assert await dispatcher.size("default") == 1

    async def test_tokens_refill_at_the_rate(self, dispatcher: Dispatcher) -> None:
        await dispatcher.push([job(f"j{i}") for i in range(3)])
        assert await dispatcher.pop_rated("default", limit=5, rate=20.0, burst=1, timeout=0) == ["j0"]

        # a token every 50 ms: the next pop that waits long enough gets one (a lower bound only)
        got: list[str] = []
        while not got:
            got = await dispatcher.pop_rated("default", limit=5, rate=20.0, burst=1, timeout=0.2)
        assert got == ["j1"]
