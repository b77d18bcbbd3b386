"""Flow control (SPEC §6): the settings of a queue, and the rule that decides which jobs may start.

The rule, in one place for every adapter: candidates are taken highest priority first, then earliest run_at
(then id). A job with a concurrency key is admitted while its key's busy jobs plus those of its key ranked before
it in this batch stay under its own limit; then a job whose queue limits starts is admitted while the queue's
room lasts (room counts only jobs its key admitted). The others are held, with the reason. "Busy" is what the
caller counts: running jobs for a start (the claim), running plus dispatched jobs for a dispatch.

Counting every earlier candidate of the key, admitted or not, makes the rule conservative when jobs of one key
carry different limits; with one limit per key (the usual case) it is exactly "fewer than the limit".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from attrs import evolve, fields, frozen

from domain.errors import InvalidInput
from domain.job import QUEUE_NAME, Hold, Job

MAX_RUNNING: Final = 1_000_000
MAX_PER_SECOND: Final = 1_000_000.0


@frozen(kw_only=True)
class QueueSettings:
    """Limits of one queue across the cluster, changed at runtime (PATCH /v1/queues/{name}). None: no limit."""

    queue: str
    max_running: int | None = None
    max_per_second: float | None = None
    paused: bool = False
    updated_at: datetime | None = None

    def problems(self) -> dict[str, str]:
        """Every rule these settings break, by field; empty when valid."""
        found: dict[str, str] = {}
        if not QUEUE_NAME.match(self.queue):
            found["queue"] = "must be 1 to 64 characters of letters, digits, '_', '.', ':' or '-'"
        running = self.max_running
        if running is not None and (isinstance(running, bool) or not 1 <= running <= MAX_RUNNING):
            found["max_running"] = f"must be an integer from 1 to {MAX_RUNNING}, or null for no limit"
        rate = self.max_per_second
        if rate is not None and (isinstance(rate, bool) or not math.isfinite(rate) or not 0 < rate <= MAX_PER_SECOND):
            found["max_per_second"] = f"must be more than 0 and at most {MAX_PER_SECOND:g}, or null for no limit"
        return found

    def change(self, *, now: datetime, **changes: Any) -> QueueSettings:
        """These settings with the given fields changed; InvalidInput if a field is unknown or a value breaks a rule."""
        unknown = set(changes) - {"max_running", "max_per_second", "paused"}
        if unknown:
            raise InvalidInput({name: "not a setting of a queue" for name in sorted(unknown)})
        changed = evolve(self, updated_at=now, **changes)
        if found := changed.problems():
            raise InvalidInput(found)
        return changed

    @property
    def limits_starts(self) -> bool:
        """Does the claim have to count this queue's running jobs (or refuse them all)?"""
        return self.paused or self.max_running is not None

    @property
    def burst(self) -> float:
        """How many starts the rate limit lets through at once after a quiet spell: one second's worth, at least 1."""
        return max(1.0, self.max_per_second or 1.0)

    def room(self, running: int) -> int | None:
        """How many more of the queue's jobs may start while `running` run; None: the queue does not limit."""
        if self.paused:
            return 0
        if self.max_running is None:
            return None
        return max(0, self.max_running - running)


SETTINGS: Final = tuple(f.name for f in fields(QueueSettings) if f.name not in ("queue", "updated_at"))


def order(job: Job) -> tuple[int, datetime, str]:
    """Start order among waiting jobs: highest priority first, then earliest run_at, then oldest id."""
    return (-job.priority, job.run_at, job.id)


def admit(candidates: Iterable[Job], *, key_busy: Mapping[str, int],
          queue_room: Mapping[str, int | None] | None = None) -> tuple[list[Job], list[tuple[Job, Hold]]]:
    """Split candidates into those admitted (in start order) and those held with the reason (module docstring).
    `key_busy` counts each key's busy jobs (missing: none); `queue_room` the room of each queue that limits starts
    (missing or None: the queue does not limit)."""
    rooms = dict(queue_room or {})
    rank: dict[str, int] = defaultdict(int)
    taken: dict[str, int] = defaultdict(int)
    admitted: list[Job] = []
    held: list[tuple[Job, Hold]] = []
    for job in sorted(candidates, key=order):
        key = job.concurrency_key
        if key is not None:
            rank[key] += 1
            if key_busy.get(key, 0) + rank[key] > job.concurrency_limit:
                held.append((job, Hold.KEY))
                continue
        room = rooms.get(job.queue)
        if room is not None and taken[job.queue] >= room:
            held.append((job, Hold.QUEUE))
            continue
        taken[job.queue] += 1
        admitted.append(job)
    return admitted, held
