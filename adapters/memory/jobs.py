"""In-memory JobRepository: the fake for unit tests and the store of `gnomon dev`.

Every method runs without awaiting in between, so on one event loop each is atomic, as the SQL ones are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from attrs import evolve

from adapters.memory.flow import MemoryFlow
from adapters.memory.paging import keyset_page
from application.ports import (
    IN_FLIGHT,
    Finished,
    JobFilter,
    Page,
    Promoted,
    QueueStats,
    Recorded,
    Submitted,
    Throughput,
)
from domain.errors import JobNotFound, LeaseLost, StaleWrite
from domain.flow import QueueSettings
from domain.job import TERMINAL, WAITING, Hold, Job, Run, State


class InMemoryJobRepository:
    def __init__(self) -> None:
        self.rows: dict[str, Job] = {}
        self.history: dict[str, list[Run]] = defaultdict(list)
        self._by_key: dict[str, str] = {}
        self._by_occurrence: dict[tuple[str, datetime], str] = {}
        self.queue_settings: dict[str, QueueSettings] = {}  # shared with InMemoryQueueSettingsRepository
        self.flow = MemoryFlow(self.rows, self.queue_settings)

    async def add(self, jobs: Sequence[Job]) -> list[Submitted]:
        return self.add_now(jobs)

    def add_now(self, jobs: Sequence[Job], *, skip_fired: bool = False) -> list[Submitted]:
        """Insert all or nothing; jobs for an occurrence that has one already are skipped when asked."""
        out: list[Submitted] = []
        seen: dict[str, Job] = {}
        for job in jobs:
            key = job.idempotency_key
            existing = self.rows.get(self._by_key.get(key, "")) if key else None
            existing = existing or (seen.get(key) if key else None)
            if existing is not None:
                out.append(Submitted(job=existing, created=False))
                continue
            occurrence = (job.schedule_id, job.scheduled_for) if job.schedule_id and job.scheduled_for else None
            if occurrence and occurrence in self._by_occurrence:
                if skip_fired:
                    continue
                raise StaleWrite(f"occurrence {occurrence[1].isoformat()} of schedule {occurrence[0]}")
            if key:
                seen[key] = job
            out.append(Submitted(job=job, created=True))
        created = [item.job for item in out if item.created]
        gated = {job.id: job for job in self.flow.gate(created, _stamp(created))}
        out = [Submitted(job=gated[item.job.id], created=True) if item.created else item for item in out]
        for item in out:
            if item.created:
                self._put(item.job)
        return out

    def holder_of(self, job: Job) -> str:
        """The id of the stored job that holds `job`'s occurrence."""
        return self._by_occurrence[(job.schedule_id or "", job.scheduled_for or job.created_at)]

    def occurrences(self) -> set[tuple[str, datetime]]:
        """(schedule id, scheduled_for) of every stored job fired by a schedule."""
        return set(self._by_occurrence)

    def _put(self, job: Job) -> None:
        self.rows[job.id] = job
        if job.idempotency_key:
            self._by_key[job.idempotency_key] = job.id
        if job.schedule_id and job.scheduled_for:
            self._by_occurrence[(job.schedule_id, job.scheduled_for)] = job.id

    async def get(self, job_id: str) -> Job:
        try:
            return self.rows[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    async def list(self, where: JobFilter, *, limit: int, cursor: str | None) -> Page[Job]:
        def match(job: Job) -> bool:
            return ((where.state is None or job.state == where.state)
                    and (where.queue is None or job.queue == where.queue)
                    and (where.task is None or job.task == where.task)
                    and (where.schedule_id is None or job.schedule_id == where.schedule_id))
        return keyset_page(filter(match, self.rows.values()), lambda j: j.id, limit=limit, cursor=cursor)

    async def save(self, job: Job, run: Run | None = None) -> list[Job]:
        self.save_now(job, run)
        return self.freed([job], job.updated_at)

    def save_now(self, job: Job, run: Run | None = None) -> None:
        stored = self.rows.get(job.id)
        if stored is None:
            raise JobNotFound(job.id)
        if stored.version != job.version - 1:
            raise StaleWrite(f"job {job.id}")
        self.rows[job.id] = job
        if run is not None:
            self.history[job.id].append(run)

    async def promote_due(self, now: datetime, limit: int) -> list[Promoted]:
        due = sorted((j for j in self.rows.values() if j.state in WAITING and j.run_at <= now),
                     key=lambda j: (j.run_at, j.id))[:limit]
        promoted = self.flow.gate([job.promote(now=now) for job in due], now)
        self.rows.update((job.id, job) for job in promoted)
        return [Promoted.of(job) for job in promoted]

    async def claim(self, job_ids: Sequence[str], *, worker_id: str, now: datetime, lease_seconds: float,
                    limited: Collection[str] = ()) -> list[Job]:
        # `limited` only spares the PostgreSQL claim a look at the settings; here they are always at hand.
        found = [job for i in dict.fromkeys(job_ids) if (job := self.rows.get(i)) is not None]
        admitted, held = self.flow.split([j for j in found if j.state is State.QUEUED], now)
        self.rows.update((job.id, job.hold(now=now, reason=reason)) for job, reason in held)
        starting = {job.id for job in admitted}
        claimed = [job.start(worker_id=worker_id, now=now, lease_seconds=lease_seconds)
                   for job in found if job.id in starting]
        self.rows.update((job.id, job) for job in claimed)
        return claimed

    async def adopt(self, job_ids: Sequence[str], *, worker_id: str, now: datetime) -> list[Job]:
        return [job for i in dict.fromkeys(job_ids) if (job := self.rows.get(i)) is not None
                and job.state is State.RUNNING and job.lease is not None and job.lease.worker_id == worker_id
                and job.lease.expires_at > now]

    async def renew(self, leases: Sequence[tuple[str, int]], *, now: datetime,
                    lease_seconds: float) -> list[str]:
        lost = []
        for job_id, token in leases:
            job = self.rows.get(job_id)
            try:
                if job is None:
                    raise LeaseLost(job_id, token)
                self.rows[job_id] = job.renew(token=token, now=now, lease_seconds=lease_seconds)
            except LeaseLost:
                lost.append(job_id)
        return lost

    async def finish(self, outcomes: Sequence[Finished], *, now: datetime,
                     limited: Collection[str] = ()) -> Recorded:
        refused, written = [], []
        for item in outcomes:
            stored = self.rows.get(item.job.id)
            if stored is None or not _holds(stored, item.job.version - 1, now):
                refused.append(item.job.id)
                continue
            self.save_now(item.job, item.run)
            written.append(item.job)
        return Recorded(refused=refused, woken=self.freed(written, now))

    async def expired(self, now: datetime, limit: int) -> list[Job]:
        lost = [j for j in self.rows.values()
                if j.state is State.RUNNING and j.lease is not None and j.lease.expires_at <= now]
        return sorted(lost, key=lambda j: j.lease.expires_at if j.lease else now)[:limit]

    async def redispatch(self, now: datetime, older_than: datetime, limit: int) -> list[Job]:
        stale = sorted((j for j in self.rows.values() if j.state is State.QUEUED and not j.held
                        and (j.dispatched_at is None or j.dispatched_at < older_than)),
                       key=lambda j: j.dispatched_at or j.created_at)[:limit]
        paused = {q for q, s in self.queue_settings.items() if s.paused}
        touched = [job.hold(now=now, reason=Hold.QUEUE) if job.queue in paused else evolve(job, dispatched_at=now)
                   for job in stale]
        self.rows.update((job.id, job) for job in touched)
        return [job for job in touched if not job.held]

    async def wake(self, now: datetime, *, limit: int, queue: str | None = None,
                   held_before: datetime | None = None) -> list[Job]:
        keys = self.flow.held_keys() if queue is None else {
            j.concurrency_key for j in self.rows.values()
            if j.held_for is Hold.KEY and j.queue == queue and j.concurrency_key}
        queues = self.flow.held_queues() if queue is None else {queue}
        return self.flow.wake(now, keys=keys, queues=queues, limit=limit, held_before=held_before, within=queue)

    async def next_due_at(self) -> datetime | None:
        return min((j.run_at for j in self.rows.values() if j.state in WAITING), default=None)

    async def runs(self, job_id: str) -> list[Run]:
        await self.get(job_id)
        return list(self.history.get(job_id, []))

    async def queue_stats(self, now: datetime, *, totals: bool = True) -> list[QueueStats]:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(State, 0))
        oldest: dict[str, datetime] = {}
        recent: dict[str, int] = defaultdict(int)
        held: dict[str, dict[Hold, int]] = defaultdict(dict)
        minute_ago = now - timedelta(minutes=1)
        for job in self.rows.values():
            counts[job.queue][job.state] += 1
            if job.held_for is not None:
                held[job.queue][job.held_for] = held[job.queue].get(job.held_for, 0) + 1
            if job.state is State.QUEUED:
                oldest[job.queue] = min(oldest.get(job.queue, job.run_at), job.run_at)
            if job.state in TERMINAL and job.finished_at and job.finished_at >= minute_ago:
                recent[job.queue] += 1
        counted = State if totals else IN_FLIGHT
        shown = [q for q, c in sorted(counts.items()) if totals or recent[q] or any(c[s] for s in IN_FLIGHT)]
        return [QueueStats(queue=q, counts={str(s): counts[q][s] for s in counted}, oldest_queued_at=oldest.get(q),
                           finished_last_minute=recent[q], held=held.get(q, {})) for q in shown]

    async def save_many(self, changes: Sequence[Finished]) -> Recorded:
        refused, written = [], []
        for item in changes:
            try:
                self.save_now(item.job, item.run)
            except (StaleWrite, JobNotFound):
                refused.append(item.job.id)
            else:
                written.append(item.job)
        return Recorded(refused=refused, woken=self.freed(written, max((j.updated_at for j in written), default=None)))

    def freed(self, written: Sequence[Job], now: datetime | None) -> list[Job]:
        """Held jobs woken because written jobs left their slot (as in PostgreSQL, a job now neither running nor
        dispatched, with a key or of a queue that limits starts, counts as having left one)."""
        left = [j for j in written if j.state is not State.RUNNING and not (j.state is State.QUEUED and not j.held)
                and (j.concurrency_key is not None or self.flow.limits(j.queue))]
        return self.flow.freed(left, now) if left and now is not None else []

    async def throughput(self, since: datetime, bucket: timedelta) -> list[Throughput]:
        counts: dict[tuple[datetime, str, State], int] = defaultdict(int)
        for job in self.rows.values():
            if job.state in TERMINAL and job.finished_at is not None and job.finished_at >= since:
                start = since + bucket * ((job.finished_at - since) // bucket)
                counts[(start, job.queue, job.state)] += 1
        return [Throughput(queue=queue, start=start, state=state, count=n)
                for (start, queue, state), n in sorted(counts.items())]

    async def prune(self, finished_before: datetime, limit: int) -> int:
        old = [j.id for j in self.rows.values()
               if j.state in TERMINAL and j.finished_at is not None and j.finished_at < finished_before][:limit]
        for job_id in old:
            job = self.rows.pop(job_id)
            self.history.pop(job_id, None)
            if job.idempotency_key:
                self._by_key.pop(job.idempotency_key, None)
        return len(old)


def _stamp(jobs: Sequence[Job]) -> datetime:
    """When new jobs were made (their dispatch stamp): the instant a hold at submit is stamped with."""
    return max((j.dispatched_at or j.updated_at for j in jobs), default=datetime.min)


def _holds(stored: Job, token: int, now: datetime) -> bool:
    """The fencing rule: still running under the lease `token` names, and that lease not yet expired."""
    try:
        stored.holder(token, now=now)
    except LeaseLost:
        return False
    return stored.version == token
