"""RedisDispatcher on a real Redis: the shared contract plus key layout, isolation and error translation.

Each test gets a fresh random prefix and deletes its keys afterwards. A Redis that cannot be reached is a
test error (raised by the fixture), never a skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from adapters.redis import dispatcher as redis_module
from adapters.redis.dispatcher import PRIORITIES, RATED_POP, RedisDispatcher
from application.ports import Dispatcher
from domain.errors import Unavailable
from domain.flow import QueueSettings
from tests.contracts.dispatcher import GUARD_SECONDS, PACE_SECONDS, DispatcherContract, job


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.ping()
    yield redis
    await redis.aclose()


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix


@pytest.fixture
def redis_dispatcher(client: Redis, prefix: str) -> RedisDispatcher:
    return RedisDispatcher(client, prefix, pace_seconds=PACE_SECONDS)


@pytest.fixture
def dispatcher(redis_dispatcher: RedisDispatcher) -> Dispatcher:
    return redis_dispatcher


class TestRedisDispatcher(DispatcherContract):
    pass


async def test_keys_live_under_the_prefix_in_one_hash_tag_per_queue(
        client: Redis, prefix: str, redis_dispatcher: RedisDispatcher) -> None:
    await redis_dispatcher.push([job("a", priority=9), job("b", priority=0), job("c", queue="mail", priority=3)])

    keys = sorted([key async for key in client.scan_iter(match=f"*{prefix}*")])

    assert keys == [f"{{{prefix}:q:default}}:z0", f"{{{prefix}:q:default}}:z9", f"{{{prefix}:q:mail}}:z3"]
    assert await client.zrange(f"{{{prefix}:q:default}}:z9", 0, -1) == ["a"]
    slots = {key_slot(redis_dispatcher.key("default", p).encode()) for p in range(10)}
    assert slots == {key_slot(f"{prefix}:q:default".encode())}


async def test_a_batch_keeps_its_order_within_each_key(
        client: Redis, prefix: str, redis_dispatcher: RedisDispatcher) -> None:
    ids = [f"j{i}" for i in range(5000)]  # more than one ZADD of the script's chunks

    await redis_dispatcher.push([job(i, priority=7 if i.endswith("7") else 1) for i in ids])

    assert await client.zrange(redis_dispatcher.key("default", 7), 0, -1) == [i for i in ids if i.endswith("7")]
    assert await client.zcard(redis_dispatcher.key("default", 1)) == 4500


async def test_scores_are_the_servers_microseconds_plus_k_paces(client: Redis, prefix: str) -> None:
    dispatcher = RedisDispatcher(client, prefix, pace_seconds=0.0005)
    before = await client.time()

    await dispatcher.push([job("a"), job("b"), job("c")])

    after = await client.time()
    scores = [score for _id, score in await client.zrange(dispatcher.key("default", 0), 0, -1, withscores=True)]
    first = scores[0]
    assert before[0] * 1_000_000 + before[1] <= first <= after[0] * 1_000_000 + after[1]
    assert scores == [first, first + 500, first + 1000]


async def test_a_server_without_the_push_script_gets_it_loaded(
        client: Redis, prefix: str, redis_dispatcher: RedisDispatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    # A restarted server has an empty script cache. A script no server has seen stands in for that (SCRIPT
    # FLUSH would empty the cache of everyone sharing this Redis).
    fresh = f"{redis_module.PUSH}-- {uuid.uuid4().hex}\n"
    monkeypatch.setattr(redis_module, "PUSH", fresh)
    monkeypatch.setattr(redis_module, "PUSH_SHA", hashlib.sha1(fresh.encode()).hexdigest())

    await redis_dispatcher.push([job("a"), job("b", queue="mail")])

    assert await redis_dispatcher.pop(["default", "mail"], limit=5, timeout=0) == ["a"]
    assert await redis_dispatcher.pop(["default", "mail"], limit=5, timeout=0) == ["b"]


async def test_keys_of_the_old_list_layout_are_left_alone(
        client: Redis, prefix: str, redis_dispatcher: RedisDispatcher) -> None:
    # An upgrade: ids left in the lists of the old layout are re-dispatched by PostgreSQL, never popped from here.
    await client.rpush(f"{{{prefix}:q:default}}:p0", "old")

    await redis_dispatcher.push([job("new")])

    assert await redis_dispatcher.pop(["default"], limit=5, timeout=0) == ["new"]
    assert await redis_dispatcher.size("default") == 0


async def test_two_prefixes_do_not_see_each_others_jobs(client: Redis, prefix: str) -> None:
    mine = RedisDispatcher(client, prefix)
    theirs = RedisDispatcher(client, prefix + "-other")
    try:
        await mine.push([job("mine-1"), job("mine-2", priority=9)])

        assert await theirs.size("default") == 0
        assert await theirs.pop(["default"], limit=10, timeout=0) == []
        assert await mine.pop(["default"], limit=10, timeout=0) == ["mine-2"]
    finally:
        keys = [key async for key in client.scan_iter(match=f"{{{prefix}-other:*")]
        if keys:
            await client.delete(*keys)


async def test_ids_come_back_as_text_on_a_bytes_client(redis_url: str, prefix: str) -> None:
    raw = Redis.from_url(redis_url)  # decode_responses=False: replies are bytes
    try:
        dispatcher = RedisDispatcher(raw, prefix)
        await dispatcher.push([job("0190a7e2-0000-7000-8000-000000000001")])

        assert await dispatcher.pop(["default"], limit=1, timeout=0.05) == ["0190a7e2-0000-7000-8000-000000000001"]
    finally:
        await raw.aclose()


@pytest.mark.parametrize("bad", ["", "a{b", "a}b"])
def test_a_prefix_that_would_break_the_hash_tag_is_refused(client: Redis, bad: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisDispatcher(client, bad)


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused for as long as the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_an_unreachable_redis_becomes_unavailable(dead_port: int) -> None:
    # No client-side retries: they only delay the same refusal.
    unreachable = Redis(host="127.0.0.1", port=dead_port, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
    dispatcher = RedisDispatcher(unreachable, "gnomon-test")
    try:
        with pytest.raises(Unavailable, match="redis push failed") as push:
            await dispatcher.push([job("a")])
        with pytest.raises(Unavailable, match="redis pop failed"):
            await dispatcher.pop(["default"], limit=5, timeout=1)
        with pytest.raises(Unavailable, match="redis size failed"):
            await dispatcher.size("default")
    finally:
        await unreachable.aclose()

    assert isinstance(push.value.__cause__, RedisConnectionError)


@pytest.fixture
async def short_socket_client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url, decode_responses=True, socket_timeout=0.3)
    yield redis
    await redis.aclose()


async def test_a_pop_longer_than_the_socket_timeout_blocks_in_slices(
        short_socket_client: Redis, prefix: str) -> None:
    dispatcher = RedisDispatcher(short_socket_client, prefix, max_block_seconds=0.1)

    assert await dispatcher.pop(["default"], limit=5, timeout=0.8) == []

    waiting = asyncio.create_task(dispatcher.pop(["default"], limit=5, timeout=GUARD_SECONDS))
    await asyncio.sleep(0.5)  # past the socket timeout: a single BLMPOP would have failed by now
    await dispatcher.push([job("late")])
    assert await waiting == ["late"]


def test_a_block_slice_shorter_than_the_minimum_is_refused(client: Redis) -> None:
    with pytest.raises(ValueError, match="max_block_seconds"):
        RedisDispatcher(client, "gnomon-test", max_block_seconds=0)


def test_a_pace_under_a_microsecond_is_refused(client: Redis) -> None:
    # Scores are whole microseconds: the ids of a batch would share one, and a set orders ties by id.
    with pytest.raises(ValueError, match="pace_seconds"):
        RedisDispatcher(client, "gnomon-test", pace_seconds=1e-7)


# -- pop_rated's bucket (review s4: a waiting pop held its tokens outside the bucket, which refilled behind it, and
# a slow rate's bucket key expired, full again, long before it had refilled)

async def server_time(client: Redis) -> float:
    seconds, micros = await client.time()
    return seconds + micros / 1_000_000


async def test_waiting_rated_pops_holding_tokens_let_more_than_burst_start_at_once(
        redis_client: Redis, redis_prefix: str) -> None:
    rate, burst, limit = 10.0, 3.0, 3
    dispatcher = RedisDispatcher(redis_client, redis_prefix, pace_seconds=0.0001)
    first = asyncio.create_task(dispatcher.pop_rated("q", limit=limit, rate=rate, burst=burst, timeout=8))
    await asyncio.sleep(burst / rate + 0.2)  # the bucket is full again while `first` holds its 3 tokens
    second = asyncio.create_task(dispatcher.pop_rated("q", limit=limit, rate=rate, burst=burst, timeout=8))
    await asyncio.sleep(burst / rate + 0.2)  # and full again while `second` holds 3 more
    assert not first.done() and not second.done()

    start = await server_time(redis_client)
    await dispatcher.push([job(f"j{i}", queue="q") for i in range(9)])
    popped = await asyncio.wait_for(first, 5) + await asyncio.wait_for(second, 5)
    popped += await dispatcher.pop_rated("q", limit=limit, rate=rate, burst=burst, timeout=0)
    span = await server_time(redis_client) - start

    # 9 ids popped in `span` seconds (a few ms): the claim allows at most rate * span + burst (~3)
    assert len(popped) <= rate * span + burst, (len(popped), span)


async def test_a_slow_rate_limits_bucket_outlives_its_refill(redis_client: Redis, redis_prefix: str) -> None:
    rate, burst = 0.001, 1.0  # QueueSettings(max_per_second=0.001).burst == 1: one start per 1,000 s
    dispatcher = RedisDispatcher(redis_client, redis_prefix, pace_seconds=0.0001)
    await dispatcher.push([job("a", queue="q"), job("b", queue="q")])
    assert await dispatcher.pop_rated("q", limit=1, rate=rate, burst=burst, timeout=0) == ["a"]

    assert await redis_client.ttl(dispatcher.bucket("q")) >= burst / rate  # kept until it is full again
    assert await dispatcher.pop_rated("q", limit=1, rate=rate, burst=burst, timeout=0) == []


# -- review s4b: a valid tiny rate overflowed EXPIRE; `at` stored to 100 us let dense pops exceed rate x span + burst;
# the put-back of a waited id without a token, checked with the production client (bytes) and a decoding one.

async def test_a_valid_tiny_rate_still_pops(redis_client: Redis, redis_prefix: str) -> None:
    """max_per_second only has to be > 0 and finite; the new TTL (60 + ceil(burst / rate)) of a tiny rate is too big
    for EXPIRE (Lua formats 1e300 as '1e+300'; above ~9.2e15 s EXPIRE refuses it): every pop of the queue fails."""
    settings = QueueSettings(queue="slow", max_per_second=1e-300)
    assert settings.problems() == {}
    dispatcher = RedisDispatcher(redis_client, redis_prefix)
    await dispatcher.push([job("a", queue="slow")])
    try:
        popped = await dispatcher.pop_rated("slow", limit=1, rate=1e-300, burst=settings.burst, timeout=0)
    except Unavailable as exc:
        raise AssertionError(f"a valid rate made the rated pop fail: {exc.__cause__}") from exc
    assert popped == ["a"]  # the bucket starts full: one token


async def test_dense_rated_pops_stay_within_rate_times_span_plus_burst(redis_client: Redis, redis_prefix: str) -> None:
    """_KEEP stores `at` with tostring(), i.e. Lua's %.14g: the server time to 100 us. Calls within one such step
    each refill from the same rounded `at` (t - at counted again at every call), so dense pops (many workers) get
    more tokens than rate * elapsed. Counted with the server's own TIME (no client timing)."""
    dispatcher = RedisDispatcher(redis_client, redis_prefix)
    n = 6000
    await dispatcher.push([job(f"j{i:05d}", queue="dense") for i in range(n)])
    keys = [dispatcher.bucket("dense"), *[dispatcher.key("dense", p) for p in PRIORITIES]]
    rate, burst = 1000.0, 1.0
    script = redis_client.register_script(RATED_POP)
    await script(keys=keys, args=[1, repr(rate), repr(burst)])  # loads the script
    async with redis_client.pipeline(transaction=False) as pipe:
        pipe.time()
        for _ in range(3000):
            pipe.evalsha(script.sha, len(keys), *keys, 1, repr(rate), repr(burst))
        pipe.time()
        replies = await pipe.execute()
    (s0, us0), (s1, us1) = replies[0], replies[-1]
    elapsed = (s1 - s0) + (us1 - us0) / 1e6
    popped = sum(len(reply) - 1 for reply in replies[1:-1])
    assert popped <= rate * elapsed + burst, (popped, elapsed, rate * elapsed + burst)


@pytest.mark.parametrize("decode", [False, True])
async def test_a_waited_id_without_a_token_goes_back_with_its_exact_score(redis_url: str, redis_prefix: str,
                                                                          decode: bool) -> None:
    client = Redis.from_url(redis_url, decode_responses=decode)
    try:
        dispatcher = RedisDispatcher(client, redis_prefix, pace_seconds=0.002)
        popping = asyncio.create_task(dispatcher.pop_rated("pb", limit=5, rate=100.0, burst=100.0, timeout=3))
        for _ in range(500):  # the pop had a token and the queue was empty: it waits in BZMPOP
            if "cmd=bzmpop" in str(await client.execute_command("CLIENT", "LIST")):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the rated pop never waited")
        await client.hset(dispatcher.bucket("pb"), mapping={"tokens": "0", "at": "99999999999"})  # no refill
        await dispatcher.push([job("x", queue="pb", priority=3), job("y", queue="pb", priority=3)])
        assert await popping == []
        scores = dict(await client.zrange(dispatcher.key("pb", 3), 0, -1, withscores=True))
        scores = {(k.decode() if isinstance(k, bytes) else k): v for k, v in scores.items()}
        assert set(scores) == {"x", "y"}
        assert scores["y"] - scores["x"] == 2000  # x back at its own score, ahead of y
    finally:
        await client.aclose()


async def test_after_a_wait_a_rated_pops_batch_stays_in_the_waited_ids_priority(redis_client: Redis,
                                                                               redis_prefix: str) -> None:
    """The id a rated pop waited for came from one priority's set; what the script pops with it comes from that set
    only, though a higher priority filled meanwhile (review s4b): a batch never mixes priorities."""
    dispatcher = RedisDispatcher(redis_client, redis_prefix, pace_seconds=0.0001)
    await dispatcher.push([job(f"low{i}", queue="w", priority=3) for i in range(3)])
    await dispatcher.push([job("high", queue="w", priority=9)])
    keys = [dispatcher.bucket("w"), *[dispatcher.key("w", p) for p in PRIORITIES]]
    [(waited, score)] = await redis_client.zpopmin(dispatcher.key("w", 3))  # what the blocking wait took
    script = redis_client.register_script(RATED_POP)

    reply = await script(keys=keys, args=[5, "1000.0", "10.0", waited, repr(score),
                                          keys.index(dispatcher.key("w", 3)) + 1])

    assert reply == [1, "low0", "low1", "low2"]
    assert await dispatcher.pop(["w"], limit=5, timeout=0) == ["high"]
