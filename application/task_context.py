"""The `ctx` a handler receives (SPEC §5, §6): who it is, until when, and whether to stop."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from attrs import define, field

from domain.errors import PermanentFailure
from domain.job import Job


@define
class JobContext:
    job_id: str
    attempt: int
    deadline: datetime
    scheduled_for: datetime | None
    lateness_seconds: float
    on_heartbeat: Callable[[str], None] = field(repr=False)
    # A plain flag, not a threading.Event (whose lock and condition cost more than the rest of a noop job):
    # it is only ever set once and read, and a bool assignment is atomic for threads.
    _cancelled: bool = field(default=False, repr=False)

    @classmethod
    def of(cls, job: Job, on_heartbeat: Callable[[str], None]) -> JobContext:
        started = job.started_at or job.updated_at
        return cls(job_id=job.id, attempt=job.attempt, deadline=job.deadline(),
                   scheduled_for=job.scheduled_for, lateness_seconds=(started - job.run_at).total_seconds(),
                   on_heartbeat=on_heartbeat)

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, its lease lost, or the worker is shutting down past its grace."""
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def heartbeat(self) -> None:
        self.on_heartbeat(self.job_id)

    def fail_permanently(self, reason: str) -> None:
        raise PermanentFailure(reason)
