"""`gnomon jobs wait`: poll the API until every given job is finished.

A round learns the states of the pending jobs in as few requests as it can: for a large set, it reads the job
list newest first, 1,000 a page, down to the oldest pending id (ids are time-ordered, so a batch sits in a
few pages), and asks for the jobs it did not meet one by one (concurrently, a window at a time). A few jobs
are asked for one by one from the start.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Final

from adapters.http.client import AsyncGnomonClient, GnomonError

FINAL: Final = frozenset({"succeeded", "failed", "cancelled", "unknown"})  # unknown: 404, e.g. pruned
FEW: Final = 50  # at most this many pending jobs: one request each
PAGE: Final = 1000
WINDOW: Final = 2000  # jobs asked for one by one per round, rotating, so that a round stays short
CONCURRENCY: Final = 16


class Watch:
    def __init__(self, client: AsyncGnomonClient, ids: Sequence[str]) -> None:
        self.client = client
        self.ids = list(dict.fromkeys(ids))
        self.states: dict[str, str] = {}
        self._turn = 0

    @property
    def pending(self) -> list[str]:
        return [i for i in self.ids if self.states.get(i) not in FINAL]

    async def run(self, *, interval: float, expired: Callable[[], bool], shown: Callable[[Watch], None]) -> None:
        """Rounds until no job is pending or `expired()`; `shown` after each round; a pause when nothing moved."""
        while pending := self.pending:
            await self.round(pending)
            shown(self)
            if not self.pending or expired():
                return
            if len(self.pending) == len(pending):
                await asyncio.sleep(interval)

    async def round(self, pending: list[str]) -> None:
        unseen = pending if len(pending) <= FEW else await self._scan(pending)
        if len(unseen) > WINDOW:  # rotate, so that every job gets its turn
            start = self._turn % len(unseen)
            unseen = (unseen[start:] + unseen[:start])[:WINDOW]
            self._turn += WINDOW
        await self._ask(unseen)

    async def _scan(self, pending: list[str]) -> list[str]:
        """Read the list down to the oldest pending id, within a budget of pages; return the ids not met."""
        wanted, lowest = set(pending), min(pending)
        budget = 2 + 3 * math.ceil(len(pending) / PAGE)  # other jobs created meanwhile share the pages
        cursor: str | None = None
        for _ in range(budget):
            page = await self.client.list_jobs(limit=PAGE, **({"cursor": cursor} if cursor else {}))
            for job in page["items"]:
                if job["id"] in wanted:
                    self.states[job["id"]] = job["state"]
                    wanted.discard(job["id"])
            cursor = page["next_cursor"]
            if not wanted or cursor is None or not page["items"] or page["items"][-1]["id"] < lowest:
                break
        return [i for i in pending if i in wanted]

    async def _ask(self, ids: Sequence[str]) -> None:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def state_of(job_id: str) -> None:
            async with limit:
                try:
                    self.states[job_id] = (await self.client.get_job(job_id))["state"]
                except GnomonError as exc:
                    if exc.status != 404:
                        raise
                    self.states[job_id] = "unknown"

        failures = [r for r in await asyncio.gather(*map(state_of, ids), return_exceptions=True) if r is not None]
        if failures:
            raise failures[0]
