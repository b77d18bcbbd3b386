"""The StartRate port on Redis: one token bucket per queue, shared by every worker (max_per_second, SPEC §6).

The bucket is a hash `{<prefix>:q:<queue>}:rate` (tokens, as of) in the queue's hash tag, next to its dispatch
lists. One Lua script refills it from the server's clock (TIME: every worker sees one clock, whatever its own says),
takes what it can and answers with the grant, atomically; a negative count gives tokens back. The bucket holds at
most `burst` tokens, so over any span t no more than rate * t + burst jobs start. An idle bucket expires after a
minute (it is full by then anyway).
"""

from __future__ import annotations

from typing import Final

from attrs import define, field
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from adapters.redis.dispatcher import _tag_safe, _unavailable

# KEYS[1] bucket; ARGV: n (negative: refund), rate per second, burst. Returns the tokens granted.
TAKE: Final = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local n, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, at = burst, t end
if n < 0 then  -- a refund: the tokens come back, the refill clock stays where it was
  redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(burst, tokens - n)), 'at', tostring(at))
  redis.call('EXPIRE', KEYS[1], 60)
  return 0
end
if t > at then tokens = math.min(burst, tokens + (t - at) * rate) end
local granted = math.min(n, math.floor(tokens))
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - granted), 'at', tostring(t))
redis.call('EXPIRE', KEYS[1], 60)
return granted
"""


@define
class RedisStartRate:
    _client: Redis
    _prefix: str = field(default="gnomon", validator=_tag_safe)
    _script: AsyncScript = field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._script = self._client.register_script(TAKE)  # EVALSHA, loading the script once if the server lacks it

    def key(self, queue: str) -> str:
        return f"{{{self._prefix}:q:{queue}}}:rate"

    async def take(self, queue: str, n: int, *, rate: float, burst: float) -> int:
        if n <= 0:
            return 0
        with _unavailable("rate take"):
            granted = await self._script(keys=[self.key(queue)], args=[n, repr(float(rate)), repr(float(burst))])
        return int(granted)

    async def refund(self, queue: str, n: int, *, burst: float) -> None:
        if n <= 0:
            return
        with _unavailable("rate refund"):
            await self._script(keys=[self.key(queue)], args=[-n, "0", repr(float(burst))])
