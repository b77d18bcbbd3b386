"""The Dispatcher port on Redis sorted sets: which queued job ids run next (docs/design.md, "Dispatch on Redis").

Layout: one sorted set per (queue, priority), `{<prefix>:q:<queue>}:z<0-9>`, member = job id, score = when the
id may go, in microseconds of the Redis server's clock. The hash tag `{<prefix>:q:<queue>}` puts the ten sets of
a queue in one Redis Cluster slot.

Order within a (queue, priority): a push of n ids to one set scores the k-th (k = 0..n-1, in the order given)
`now + k * pace`, `now` being the server's TIME, read by the push script itself. A batch is paced, as if its ids
had arrived one per `pace`: its order is kept, and an id pushed later alone (score = its push time) goes ahead
of the part of the batch scored after it instead of waiting for all of it. Single pushes stay FIFO (push time),
and a batch's k-th id waits at most for what was pushed before its own score, k * pace after the batch: late,
never starved.

- push: one pipeline per batch, one EVALSHA of the push script per key (TIME, then ZADD NX of the paced
  scores). NX: an id already waiting keeps its place, so a re-dispatch (PostgreSQL re-sends ids whose dispatch
  is older than the dispatch timeout) neither duplicates it nor sends it to the back.
- pop: one `BZMPOP timeout numkeys <keys> MIN COUNT limit` over the keys in queue order, then priority 9..0:
  up to `limit` ids per round trip, lowest scores of the highest priority first, blocking server-side (no
  polling). BZMPOP takes from the first non-empty set only, so a batch never mixes priorities; a short batch
  just means the worker pops again for the rest. Needs Redis >= 7.0.
- size: ZCARD of the ten sets of a queue, in one pipeline.
- pop_rated (max_per_second, SPEC §6): the queue's token bucket is the hash `{<prefix>:q:<queue>}:rate` (tokens,
  as of), in the queue's hash tag beside its sets. One Lua script refills it from the server's clock (TIME: every
  worker sees one clock, whatever its own says), takes up to `limit` tokens, ZMPOPs at most that many ids and
  keeps only the tokens of the ids it found, atomically: a busy rate-limited queue costs one round trip per pop,
  as an unlimited one does. The bucket holds at most `burst` tokens, so over any span t no more than
  rate * t + burst ids are popped. When the queue was empty, the pop waits for one id without tokens, then pays
  for it (putting it back, with its score, when there is no token) and pops more within the tokens left, in one
  script. An idle bucket's key expires a minute after it would be full again (burst / rate + 60 s).

Redis is never the only copy. PostgreSQL decides what exists and re-pushes queued jobs whose dispatch is
older than GNOMON_DISPATCH_TIMEOUT_SECONDS, so an id lost here (FLUSHDB, restart, a worker killed right after
a pop) comes back, and an id popped twice is harmless: the claim in PostgreSQL takes only jobs still `queued`.

Operational notes:
- A pop holds one connection of the client's pool while it waits: size `max_connections` for the concurrent
  pops. It blocks in BZMPOP slices of at most `max_block_seconds` (default 2), which must stay below the
  client's `socket_timeout` (redis-py 8 defaults it to 5 s); a socket timeout that fires first surfaces
  as Unavailable.
- Upgrade from the list layout (`...}:p<0-9>`): those lists are not read any more; the jobs whose ids wait
  there are re-pushed by PostgreSQL's re-dispatch within the dispatch timeout. The old keys can be deleted.
- Redis Cluster: keys of several queues in one BZMPOP must share a slot, which per-queue hash tags do not
  give. A clustered deployment serves one queue per pop (one call per queue, in order, the first blocking
  call only for the last queue) or runs workers per queue. The supported deployment (GNOMON_REDIS_URL with a
  DB number) is a single Redis server or a Sentinel-managed primary, where any set of keys works.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from attrs import define, field, validators
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from application.ports import Dispatchable
from domain.errors import Unavailable

PRIORITIES: Final = range(9, -1, -1)  # popped in this order
# BZMPOP's timeout 0 means "block forever", and the server counts in milliseconds: a wait this short is not
# worth a blocking call, so anything below it is a single non-blocking ZMPOP.
MIN_BLOCK_SECONDS: Final = 0.01
MIN_TOKEN_WAIT_SECONDS: Final = 0.005  # a rated pop without tokens waits this long at least before it returns
MIN_PACE_SECONDS: Final = 1e-6  # scores are whole microseconds: a batch's ids must not share one

# KEYS[1]: a sorted set; ARGV[1]: the pace in microseconds; ARGV[2..]: ids in batch order. Scores are whole
# microseconds since the epoch (about 1.8e15, exact in a double), formatted with %d because Lua's default
# number format keeps 14 digits. ZADD in chunks: unpack() of a whole large batch would overflow Lua's stack.
PUSH: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local pace = tonumber(ARGV[1])
local args = {}
for i = 2, #ARGV do
  args[#args + 1] = string.format('%d', now + (i - 2) * pace)
  args[#args + 1] = ARGV[i]
  if #args == 2000 then
    redis.call('ZADD', KEYS[1], 'NX', unpack(args))
    args = {}
  end
end
if #args > 0 then
  redis.call('ZADD', KEYS[1], 'NX', unpack(args))
end
"""
PUSH_SHA: Final = hashlib.sha1(PUSH.encode()).hexdigest()

# KEYS[1] the bucket (tokens, as of), KEYS[2..] the queue's sets in pop order; ARGV: limit, rate per second, burst.
# Refills the bucket from the server's clock, pops up to as many ids as there are whole tokens (and `limit`) and
# pays for those found. ARGV[4..6], when given: an id already popped by a blocking wait, its score and the index in
# KEYS of its set: it is paid for first, or put back where it was if there is no token, and the rest of the batch
# comes from its set only (a batch never mixes priorities, as with BZMPOP). Returns {1 if there was a token else 0,
# ids...}. The bucket is stored with every digit (Lua's tostring keeps 14: `at` rounded to 100 us credited the same
# slice of time to every call within it, review s4b); its key lives until the bucket would be full again, capped (a
# rate of 1e-300 per second is valid; EXPIRE takes no 1e300).
RATED_POP: Final = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local limit, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, at = burst, t end
if t > at then tokens = math.min(burst, tokens + (t - at) * rate) end
local reply = {0}
if math.floor(tokens) >= 1 then reply[1] = 1 end
local sets = {}
if ARGV[4] then
  sets = {KEYS[tonumber(ARGV[6])]}
  if reply[1] == 0 then
    redis.call('ZADD', sets[1], 'NX', ARGV[5], ARGV[4])
  else
    reply[2] = ARGV[4]
    tokens = tokens - 1
    limit = limit - 1
  end
else
  for i = 2, #KEYS do sets[#sets + 1] = KEYS[i] end
end
local granted = math.min(limit, math.floor(tokens))
if granted >= 1 then
  local args = {'ZMPOP', #sets, unpack(sets)}  -- unpack() expands only as the last argument
  args[#args + 1] = 'MIN'
  args[#args + 1] = 'COUNT'
  args[#args + 1] = granted
  local popped = redis.call(unpack(args))
  if popped then
    for _, pair in ipairs(popped[2]) do reply[#reply + 1] = pair[1] end
    tokens = tokens - #popped[2]
  end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.6f', t))
local ttl = 2147483647
if rate > 0 and burst / rate < ttl - 60 then ttl = 60 + math.ceil(burst / rate) end
redis.call('EXPIRE', KEYS[1], string.format('%d', ttl))
return reply
"""


def _tag_safe(_inst: object, _attr: Any, prefix: str) -> None:
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"redis prefix {prefix!r} must be non-empty, without braces (it goes in a hash tag)")


@contextmanager
def _unavailable(action: str) -> Iterator[None]:
    """Driver errors end here: the core only ever sees Unavailable (with the cause chained)."""
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as exc:
        raise Unavailable(f"redis {action} failed: {type(exc).__name__}: {exc}") from exc


def _ids(reply: list[Any] | None) -> list[str]:
    """[key, [[id, score], ...]] from (B)ZMPOP, or None when every set was empty."""
    if not reply:
        return []
    return [_text(member) for member, _score in reply[1]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@define
class RedisDispatcher:
    _client: Redis
    _prefix: str = field(default="gnomon", validator=_tag_safe)
    _max_block_seconds: float = field(default=2.0, kw_only=True, validator=validators.ge(MIN_BLOCK_SECONDS))
    # The spacing of a batch's scores. Above the time a worker pool takes per job, a job pushed alone goes ahead
    # of the rest of an earlier batch; a batch of n lets later pushes before its tail for up to n * pace.
    _pace_seconds: float = field(default=0.002, kw_only=True, validator=validators.ge(MIN_PACE_SECONDS))
    # EVALSHA, loading the script once if the server lacks it
    _rated_pop: AsyncScript = field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._rated_pop = self._client.register_script(RATED_POP)

    def key(self, queue: str, priority: int) -> str:
        """The sorted set of `queue` at `priority` (clamped to 0..9, so no id is stranded)."""
        return f"{{{self._prefix}:q:{queue}}}:z{min(max(priority, 0), 9)}"

    def bucket(self, queue: str) -> str:
        """The token bucket of `queue` (max_per_second), in the queue's hash tag."""
        return f"{{{self._prefix}:q:{queue}}}:rate"

    async def push(self, jobs: Sequence[Dispatchable]) -> None:
        batches: dict[str, list[str]] = {}
        for job in jobs:
            batches.setdefault(self.key(job.queue, job.priority), []).append(job.id)
        if not batches:
            return
        with _unavailable("push"):
            failed = await self._run_push(batches)
            if failed:  # the server lost its script cache (a restart): load it once, push those keys again
                await self._client.script_load(PUSH)
                if failed := await self._run_push({key: batches[key] for key in failed}):
                    raise NoScriptError(f"push script still unknown after SCRIPT LOAD ({len(failed)} keys)")

    async def _run_push(self, batches: dict[str, list[str]]) -> list[str]:
        """The keys whose push the server refused for want of the script; any other error raises."""
        pace = max(1, round(self._pace_seconds * 1_000_000))
        # Not MULTI: atomicity buys nothing here (PostgreSQL re-dispatches), and a plain pipeline also works
        # when the keys of a batch live on different cluster slots.
        async with self._client.pipeline(transaction=False) as pipe:
            for key, ids in batches.items():
                pipe.evalsha(PUSH_SHA, 1, key, pace, *ids)
            replies = await pipe.execute(raise_on_error=False)
        failed = []
        for key, reply in zip(batches, replies, strict=True):
            if isinstance(reply, NoScriptError):
                failed.append(key)
            elif isinstance(reply, Exception):
                raise reply
        return failed

    async def pop(self, queues: Sequence[str], *, limit: int, timeout: float) -> list[str]:
        if limit < 1 or not queues:
            return []
        keys = [self.key(queue, priority) for queue in queues for priority in PRIORITIES]
        with _unavailable("pop"):
            if timeout < MIN_BLOCK_SECONDS:
                return _ids(await self._client.zmpop(len(keys), keys, min=True, count=limit))
            return _ids(await self._block(keys, limit, seconds=timeout))

    async def pop_rated(self, queue: str, *, limit: int, rate: float, burst: float, timeout: float) -> list[str]:
        if limit < 1:
            return []
        keys = [self.key(queue, priority) for priority in PRIORITIES]
        scripted = [self.bucket(queue), *keys]
        rated = [repr(float(rate)), repr(float(burst))]
        with _unavailable("rated pop"):
            had, *found = await self._rated_pop(keys=scripted, args=[limit, *rated])
            if not found and had and timeout >= MIN_BLOCK_SECONDS:
                # The queue was empty: wait for one id holding no token (a token held while waiting would let the
                # bucket refill behind it), then pay for it and pop more within the tokens left.
                waited = await self._block(keys, 1, seconds=timeout)
                if waited:
                    key, [(member, score)] = waited
                    had, *found = await self._rated_pop(
                        keys=scripted, args=[limit, *rated, _text(member), _text(score), keys.index(_text(key)) + 2])
        if not found and not had:  # no token: come back when the next one may be there
            await asyncio.sleep(max(0.0, min(timeout, max(MIN_TOKEN_WAIT_SECONDS, 1 / rate))))
        return [_text(member) for member in found]

    async def _block(self, keys: list[str], limit: int, *, seconds: float) -> Any:
        """BZMPOP's reply ([key, [[id, score], ...]]), or None when nothing came within `seconds`."""
        # Slices of at most max_block_seconds, each blocking server-side: a long pop never outlasts the
        # client's socket timeout (redis-py 8 defaults it to 5 s), and a dead server is noticed per slice.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        wait = seconds
        while wait >= MIN_BLOCK_SECONDS:
            block = min(wait, self._max_block_seconds)
            reply = await self._client.bzmpop(block, len(keys), keys, min=True, count=limit)
            if reply:
                return reply
            wait = deadline - loop.time()
        return None

    async def size(self, queue: str) -> int:
        with _unavailable("size"):
            async with self._client.pipeline(transaction=False) as pipe:
                for priority in PRIORITIES:
                    pipe.zcard(self.key(queue, priority))
                counts = await pipe.execute()
        return sum(int(count) for count in counts)
