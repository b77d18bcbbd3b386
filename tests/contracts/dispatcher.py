"""What every Dispatcher must do. Subclass in a test module and provide a `dispatcher` fixture.

Batches may stop short of `limit` (the Redis adapter never mixes priorities in one batch), so order is
checked on the sequence a worker sees when it pops until nothing is left.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from application.ports import Dispatcher, Promoted
from domain.job import Job

T0 = datetime(2025, 1, 1, tzinfo=UTC)
GUARD_SECONDS = 10.0  # turns a hang into a failure; never reached by a passing test


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

    async def test_fifo_within_a_priority_across_batches(self, dispatcher: Dispatcher) -> None:
        first = [f"first-{i:02}" for i in range(12)]
        second = [f"second-{i:02}" for i in range(12)]
        await dispatcher.push([job(i, priority=3) for i in first])
        await dispatcher.push([job(i, priority=3) for i in second])

        assert flat(await drain(dispatcher, ["default"], limit=5)) == first + second

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

    async def test_a_duplicate_push_is_delivered_twice(self, dispatcher: Dispatcher) -> None:
        # Harmless by design: the claim in PostgreSQL starts only jobs that are still queued.
        await dispatcher.push([job("dup")])
        await dispatcher.push([job("dup")])

        assert await dispatcher.size("default") == 2
        assert flat(await drain(dispatcher, ["default"])) == ["dup", "dup"]

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
