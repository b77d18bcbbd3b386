"""Flow control of the in-memory store: the same rule as the PostgreSQL adapter (domain/flow.py decides), counted
by walking the rows. Only jobs with a concurrency key, or of a queue whose settings limit starts, ever get here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from attrs import define

from domain.flow import QueueSettings, admit, order
from domain.job import Hold, Job, State

WAKE_LIMIT: Final = 10_000  # held jobs woken at most per call when a queue stops limiting


@define
class MemoryFlow:
    rows: dict[str, Job]
    settings: dict[str, QueueSettings]

    def limits(self, queue: str) -> bool:
        found = self.settings.get(queue)
        return found is not None and found.limits_starts

    def gate(self, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """Dispatch gating: keyed queued jobs beyond their key's room in flight are held instead of dispatched."""
        keyed = [j for j in jobs if j.state is State.QUEUED and j.concurrency_key is not None and not j.held]
        if not keyed:
            return list(jobs)
        busy = {k: self._in_flight(k, now) for k in {j.concurrency_key for j in keyed if j.concurrency_key}}
        _, held = admit(keyed, key_busy=busy)
        marked = {job.id: job.hold(now=now, reason=reason) for job, reason in held}
        return [marked.get(j.id, j) for j in jobs]

    def split(self, candidates: Sequence[Job], now: datetime) -> tuple[list[Job], list[tuple[Job, Hold]]]:
        """The claim's verdict: which queued candidates start, which are held."""
        keys = {j.concurrency_key for j in candidates if j.concurrency_key is not None}
        queues = {j.queue for j in candidates if self.limits(j.queue)}
        busy = {k: self._running(lambda j, k=k: j.concurrency_key == k, now) for k in keys}
        room = {q: self.settings[q].room(self._running(lambda j, q=q: j.queue == q, now)) for q in queues}
        return admit(candidates, key_busy=busy, queue_room=room)

    def freed(self, left: Iterable[Job], now: datetime) -> list[Job]:
        """Wake what the jobs that left their slot (not running, not dispatched any more) make room for."""
        left = list(left)
        keys = [j.concurrency_key for j in left if j.concurrency_key is not None]
        return self.wake(now, keys=keys, queues=[j.queue for j in left if self.limits(j.queue)], limit=WAKE_LIMIT)

    def wake(self, now: datetime, *, keys: Iterable[str], queues: Iterable[str], limit: int,
             held_before: datetime | None = None, within: str | None = None) -> list[Job]:
        """Held jobs that have room (of queue `within` only, if given): unheld, stamped dispatched, returned."""
        chosen: list[Job] = []
        for key in sorted(set(keys)):
            held = self._held(Hold.KEY, lambda j, key=key: j.concurrency_key == key and within in (None, j.queue),
                              held_before)
            if held:
                chosen += held[:max(0, held[0].concurrency_limit - self._in_flight(key, now))]
        for queue in sorted(set(queues)):
            held = self._held(Hold.QUEUE, lambda j, queue=queue: j.queue == queue, held_before)
            settings = self.settings.get(queue, QueueSettings(queue=queue))
            room = settings.room(self._running(lambda j, queue=queue: j.queue == queue, now))
            chosen += held[:WAKE_LIMIT if room is None else room]
        woken = [job.unhold(now=now) for job in chosen[:limit]]
        self.rows.update((job.id, job) for job in woken)
        return woken

    def held_keys(self) -> set[str]:
        return {j.concurrency_key for j in self.rows.values() if j.held_for is Hold.KEY and j.concurrency_key}

    def held_queues(self) -> set[str]:
        return {j.queue for j in self.rows.values() if j.held_for is Hold.QUEUE}

    def _held(self, reason: Hold, match, held_before: datetime | None) -> list[Job]:  # type: ignore[no-untyped-def]
        return sorted((j for j in self.rows.values() if j.state is State.QUEUED and j.held_for is reason and match(j)
                       and (held_before is None or (j.held_at is not None and j.held_at < held_before))), key=order)

    def _running(self, match, now: datetime) -> int:  # type: ignore[no-untyped-def]
        """Running jobs whose lease is live: a lost worker's slot frees itself when its lease expires."""
        return sum(1 for j in self.rows.values()
                   if j.state is State.RUNNING and j.lease is not None and j.lease.expires_at > now and match(j))

    def _in_flight(self, key: str, now: datetime) -> int:
        dispatched = sum(1 for j in self.rows.values()
                         if j.state is State.QUEUED and not j.held and j.concurrency_key == key)
        return dispatched + self._running(lambda j: j.concurrency_key == key, now)
