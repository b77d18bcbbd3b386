"""Jobs and ids made in bulk for a submit: the same values the one-at-a-time, validated paths make."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.ids import uuid7, uuid7_many
from domain.job import Job, JobSpec, State
from tests.unit.strategies import instants, job_specs


def _validated(job_id: str, spec: JobSpec, now: datetime, schedule_id: str | None,
               scheduled_for: datetime | None) -> Job:
    """Job.create as it was: through attrs' __init__ and every validator."""
    run_at = spec.run_at or now
    due = run_at <= now
    return Job(id=job_id, task=spec.task, payload=spec.payload, queue=spec.queue, priority=spec.priority,
               run_at=run_at, state=State.QUEUED if due else State.SCHEDULED, max_attempts=spec.max_attempts,
               backoff=spec.backoff, timeout_seconds=spec.timeout_seconds, idempotency_key=spec.idempotency_key,
               schedule_id=schedule_id, scheduled_for=scheduled_for, concurrency_key=spec.concurrency_key,
               concurrency_limit=spec.concurrency_limit, created_at=now, updated_at=now,
               dispatched_at=now if due else None)


@given(specs=st.lists(job_specs(run_at=st.none() | instants()), min_size=1, max_size=5), now=instants(),
       schedule_id=st.none() | st.just("0190a1b2-0000-7000-8000-000000000001"), scheduled_for=st.none() | instants())
def test_jobs_made_in_bulk_equal_validated_ones(specs: list[JobSpec], now: datetime, schedule_id: str | None,
                                                scheduled_for: datetime | None) -> None:
    ids = [f"id-{i}" for i in range(len(specs))]
    made = Job.create_many(ids, specs, now=now, schedule_id=schedule_id, scheduled_for=scheduled_for)
    assert made == [_validated(i, s, now, schedule_id, scheduled_for) for i, s in zip(ids, specs, strict=True)]
    assert all(vars(job).keys() == vars(_validated(ids[0], specs[0], now, None, None)).keys() for job in made)
    assert Job.create(ids[0], specs[0], now=now, schedule_id=schedule_id, scheduled_for=scheduled_for) == made[0]


def test_jobs_are_not_made_from_a_naive_now() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Job.create_many(["a"], [JobSpec(task="noop")], now=datetime(2026, 1, 1))


def _uuid7_by_int(at: datetime, entropy: bytes) -> str:
    ms = int(at.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(entropy[:10], "big")
    value = ms << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


@given(at=instants(datetime(1970, 1, 1, tzinfo=UTC)), entropy=st.binary(min_size=10, max_size=10))
def test_a_uuid7_is_laid_out_as_rfc_9562_says(at: datetime, entropy: bytes) -> None:
    made = uuid7(at, entropy)
    assert made == _uuid7_by_int(at, entropy)
    assert uuid.UUID(made).version == 7 and uuid.UUID(made).variant == uuid.RFC_4122


@given(at=instants(datetime(1970, 1, 1, tzinfo=UTC)), entropy=st.binary(min_size=0, max_size=100))
def test_ids_made_in_bulk_are_those_made_one_by_one(at: datetime, entropy: bytes) -> None:
    entropy = entropy[:len(entropy) // 10 * 10]
    assert uuid7_many(at, entropy) == [uuid7(at, entropy[i:i + 10]) for i in range(0, len(entropy), 10)]


def test_ids_in_bulk_need_ten_bytes_each() -> None:
    with pytest.raises(ValueError, match="10 bytes"):
        uuid7_many(datetime(2026, 1, 1, tzinfo=UTC), b"x" * 15)
