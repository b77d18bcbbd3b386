"""The repository contracts, run against the PostgreSQL adapters on a fresh migrated database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import Pool, create_pool, open_pool
from adapters.postgres.queue_settings import PgQueueSettingsRepository
from adapters.postgres.schedule_repository import PgScheduleRepository
from application.ports import JobRepository, QueueSettingsRepository, ScheduleRepository
from tests.contracts.cancel_other import CancelOtherContract
from tests.contracts.flow import FlowControlContract
from tests.contracts.repositories import JobRepositoryContract, ScheduleRepositoryContract


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[Pool]:
    pool = create_pool(pg_url, max_size=4)
    await open_pool(pool)
    yield pool
    await pool.close()


@pytest.fixture
def jobs(pool: Pool) -> JobRepository:
    return PgJobRepository(pool)


@pytest.fixture
def schedules(pool: Pool) -> ScheduleRepository:
    return PgScheduleRepository(pool)


@pytest.fixture
def queue_settings(pool: Pool) -> QueueSettingsRepository:
    return PgQueueSettingsRepository(pool)


class TestPgFlowControl(FlowControlContract):
    pass


class TestPgCancelOther(CancelOtherContract):
    pass


class TestPgJobRepository(JobRepositoryContract):
    pass


class TestPgScheduleRepository(ScheduleRepositoryContract):
    pass
