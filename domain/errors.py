"""Errors of the domain: specific nouns under DomainError, mapped to HTTP statuses at the edge."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidInput(DomainError):
    """A value breaks a rule of the model; `errors` maps a field path to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class NotFound(DomainError):
    kind = "resource"

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"{self.kind} {key!r} not found")


class JobNotFound(NotFound):
    kind = "job"


class ScheduleNotFound(NotFound):
    kind = "schedule"


class Conflict(DomainError):
    """The request is well formed but clashes with the stored state."""


class IllegalTransition(Conflict):
    def __init__(self, job_id: str, current: object, wanted: object) -> None:
        self.job_id, self.current, self.wanted = job_id, current, wanted
        super().__init__(f"job {job_id} cannot go from {current} to {wanted}")


class LeaseLost(Conflict):
    """A worker wrote with a fencing token that is no longer current (stale or expired lease)."""

    def __init__(self, job_id: str, token: int) -> None:
        self.job_id, self.token = job_id, token
        super().__init__(f"job {job_id}: lease with token {token} is no longer held")


class StaleWrite(Conflict):
    """Optimistic concurrency: the stored version moved on since the value was read."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"{key} was changed concurrently; reload and try again")


class DuplicateSchedule(Conflict):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a schedule named {name!r} already exists")


class UnknownTask(InvalidInput):
    def __init__(self, field: str, task: str) -> None:
        super().__init__({field: f"unknown task {task!r}: not in the task registry"})


class PermanentFailure(Exception):
    """Raised by a handler to fail its job now, without further attempts."""


class Unavailable(DomainError):
    """A backing service (database, dispatch queue) cannot be reached right now."""
