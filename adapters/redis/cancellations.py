"""The Cancellations port on Redis pub/sub: CancelJob publishes the ids of running jobs it cancelled on
`<prefix>:cancel`; every worker subscribes and, when it holds one of them, renews its leases at once (the
renewal reports the cancelled lease as lost and the worker stops the handler). Pub/sub delivers to whoever
listens right now and keeps nothing: a notice sent while a worker was disconnected is lost, which is fine,
since its next heartbeat finds the cancellation in PostgreSQL anyway (docs/design.md, "Workers")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Final

from attrs import define, field
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from adapters.redis.dispatcher import _tag_safe, _unavailable

# Each wait on the subscription is cut into slices below the client's socket timeout (as BLMPOP is).
SLICE_SECONDS: Final = 1.0


def _text(data: Any) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)


@define
class RedisCancellations:
    _client: Redis
    _prefix: str = field(default="gnomon", validator=_tag_safe)
    _subscription: PubSub | None = field(default=None, init=False, repr=False)

    @property
    def channel(self) -> str:
        return f"{self._prefix}:cancel"

    async def announce(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            with _unavailable("publish"):
                await self._client.publish(self.channel, ",".join(job_ids))

    async def listen(self, timeout: float) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        try:
            with _unavailable("subscribe"):
                subscription = await self._subscribed()
                message = await subscription.get_message(ignore_subscribe_messages=True, timeout=0)
                while message is None and (left := deadline - loop.time()) > 0:
                    message = await subscription.get_message(ignore_subscribe_messages=True,
                                                             timeout=min(left, SLICE_SECONDS))
                ids: list[str] = []
                while message is not None:  # whatever else arrived meanwhile comes in the same batch
                    ids.extend(job_id for job_id in _text(message["data"]).split(",") if job_id)
                    message = await subscription.get_message(ignore_subscribe_messages=True, timeout=0)
                return ids
        except BaseException:
            await self.close()  # the next listen subscribes on a fresh connection
            raise

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            # a broken connection may fail to say goodbye; it is dropped either way
            with contextlib.suppress(Exception):
                await subscription.aclose()

    async def _subscribed(self) -> PubSub:
        if self._subscription is None:
            subscription = self._client.pubsub()
            self._subscription = subscription
            await subscription.subscribe(self.channel)
        return self._subscription
