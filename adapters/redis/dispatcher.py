"""The Dispatcher port on Redis lists: which queued job ids run next (docs/design.md, "Dispatch on Redis").

Layout: one list per (queue, priority), `{<prefix>:q:<queue>}:p<0-9>`. The hash tag `{<prefix>:q:<queue>}`
puts the ten lists of a queue in one Redis Cluster slot.

- push: one pipeline per batch, one RPUSH per key with all the ids of that (queue, priority).
- pop: one `BLMPOP timeout numkeys <keys> LEFT COUNT limit` over the keys in queue order, then priority 9..0:
  a worker gets up to `limit` ids per round trip, highest priority first, and blocks server-side (no
  polling). BLMPOP takes from the first non-empty list only, so a batch never mixes priorities; a short
  batch just means the worker pops again for the rest. Needs Redis >= 7.0.
- size: LLEN of the ten lists of a queue, in one pipeline.

Redis is never the only copy. PostgreSQL decides what exists and re-pushes queued jobs whose dispatch is
older than GNOMON_DISPATCH_TIMEOUT_SECONDS, so an id lost here (FLUSHDB, restart, a worker killed right after
a pop) comes back, and a duplicate is harmless: the claim in PostgreSQL takes only jobs still `queued`.

Operational notes:
- A pop holds one connection of the client's pool while it waits: size `max_connections` for the concurrent
  pops. It blocks in BLMPOP slices of at most `max_block_seconds` (default 2), which must stay below the
  client's `socket_timeout` (redis-py 8 defaults it to 5 s); a socket timeout that fires first surfaces
  as Unavailable.
- Redis Cluster: keys of several queues in one BLMPOP must share a slot, which per-queue hash tags do not
  give. A clustered deployment serves one queue per pop (one call per queue, in order, the first blocking
  call only for the last queue) or runs workers per queue. The supported deployment (GNOMON_REDIS_URL with a
  DB number) is a single Redis server or a Sentinel-managed primary, where any set of keys works.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from attrs import define, field, validators
from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from domain.errors import Unavailable
from domain.job import Job

PRIORITIES: Final = range(9, -1, -1)  # popped in this order
# BLMPOP's timeout 0 means "block forever", and the server counts in milliseconds: a wait this short is not
# worth a blocking call, so anything below it is a single non-blocking LMPOP.
MIN_BLOCK_SECONDS: Final = 0.01


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
    """[key, [id, ...]] from (B)LMPOP, or None when every list was empty."""
    if not reply:
        return []
    return [job_id.decode() if isinstance(job_id, bytes) else job_id for job_id in reply[1]]


@define
class RedisDispatcher:
    _client: Redis
    _prefix: str = field(default="gnomon", validator=_tag_safe)
    _max_block_seconds: float = field(default=2.0, kw_only=True, validator=validators.ge(MIN_BLOCK_SECONDS))

    def key(self, queue: str, priority: int) -> str:
        """The list holding the ids of `queue` at `priority` (clamped to 0..9, so no id is stranded)."""
        return f"{{{self._prefix}:q:{queue}}}:p{min(max(priority, 0), 9)}"

    async def push(self, jobs: Sequence[Job]) -> None:
        batches: dict[str, list[str]] = {}
        for job in jobs:
            batches.setdefault(self.key(job.queue, job.priority), []).append(job.id)
        if not batches:
            return
        with _unavailable("push"):
            # Not MULTI: atomicity buys nothing here (PostgreSQL re-dispatches), and a plain pipeline also
            # works when the keys of a batch live on different cluster slots.
            async with self._client.pipeline(transaction=False) as pipe:
                for key, ids in batches.items():
                    pipe.rpush(key, *ids)
                await pipe.execute()

    async def pop(self, queues: Sequence[str], *, limit: int, timeout: float) -> list[str]:
        if limit < 1 or not queues:
            return []
        keys = [self.key(queue, priority) for queue in queues for priority in PRIORITIES]
        with _unavailable("pop"):
            if timeout < MIN_BLOCK_SECONDS:
                return _ids(await self._client.lmpop(len(keys), *keys, direction="LEFT", count=limit))
            return await self._block(keys, limit, seconds=timeout)

    async def _block(self, keys: list[str], limit: int, *, seconds: float) -> list[str]:
        # Slices of at most max_block_seconds, each blocking server-side: a long pop never outlasts the
        # client's socket timeout (redis-py 8 defaults it to 5 s), and a dead server is noticed per slice.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        wait = seconds
        while wait >= MIN_BLOCK_SECONDS:
            block = min(wait, self._max_block_seconds)
            reply = await self._client.blmpop(block, len(keys), *keys, direction="LEFT", count=limit)
            if reply:
                return _ids(reply)
            wait = deadline - loop.time()
        return []

    async def size(self, queue: str) -> int:
        with _unavailable("size"):
            async with self._client.pipeline(transaction=False) as pipe:
                for priority in PRIORITIES:
                    pipe.llen(self.key(queue, priority))
                counts = await pipe.execute()
        return sum(int(count) for count in counts)
