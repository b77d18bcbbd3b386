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
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from application.ports import Dispatchable
from domain.errors import Unavailable

PRIORITIES: Final = range(9, -1, -1)  # popped in this order
# BZMPOP's timeout 0 means "block forever", and the server counts in milliseconds: a wait this short is not
# worth a blocking call, so anything below it is a single non-blocking ZMPOP.
MIN_BLOCK_SECONDS: Final = 0.01
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
    return [member.decode() if isinstance(member, bytes) else member for member, _score in reply[1]]


@define
class RedisDispatcher:
    _client: Redis
    _prefix: str = field(default="gnomon", validator=_tag_safe)
    _max_block_seconds: float = field(default=2.0, kw_only=True, validator=validators.ge(MIN_BLOCK_SECONDS))
    # The spacing of a batch's scores. Above the time a worker pool takes per job, a job pushed alone goes ahead
    # of the rest of an earlier batch; a batch of n lets later pushes before its tail for up to n * pace.
    _pace_seconds: float = field(default=0.002, kw_only=True, validator=validators.ge(MIN_PACE_SECONDS))

    def key(self, queue: str, priority: int) -> str:
        """The sorted set of `queue` at `priority` (clamped to 0..9, so no id is stranded)."""
        return f"{{{self._prefix}:q:{queue}}}:z{min(max(priority, 0), 9)}"

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
            return await self._block(keys, limit, seconds=timeout)

    async def _block(self, keys: list[str], limit: int, *, seconds: float) -> list[str]:
        # Slices of at most max_block_seconds, each blocking server-side: a long pop never outlasts the
        # client's socket timeout (redis-py 8 defaults it to 5 s), and a dead server is noticed per slice.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        wait = seconds
        while wait >= MIN_BLOCK_SECONDS:
            block = min(wait, self._max_block_seconds)
            reply = await self._client.bzmpop(block, len(keys), keys, min=True, count=limit)
            if reply:
                return _ids(reply)
            wait = deadline - loop.time()
        return []

    async def size(self, queue: str) -> int:
        with _unavailable("size"):
            async with self._client.pipeline(transaction=False) as pipe:
                for priority in PRIORITIES:
                    pipe.zcard(self.key(queue, priority))
                counts = await pipe.execute()
        return sum(int(count) for count in counts)
