"""The repository contracts, run against the PostgreSQL adapters on a fresh migrated database per test."""

from __future__ import annotations

import pytest

from adapters.postgres.job_repository import PgJobRepository
from adapters.postgres.pool import Pool
from adapters.postgres.queue_settings import PgQueueSettingsRepository
from adapters.postgres.schedule_repository import PgScheduleRepository
from application.ports import JobRepository, QueueSettingsRepository, ScheduleRepository
from tests.contracts.cancel_other import CancelOtherContract
from tests.contracts.flow import FlowControlContract
from tests.contracts.repositories import JobRepositoryContract, ScheduleRepositoryContract
from tests.integration.conftest import OpenPool


@pytest.fixture
async def pool(open_pools: OpenPool) -> Pool:
    return await open_pools(max_size=4)


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
