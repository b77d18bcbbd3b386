"""The repository contracts, run against the in-memory adapters."""

from __future__ import annotations

import pytest

from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.queue_settings import InMemoryQueueSettingsRepository
from adapters.memory.schedules import InMemoryScheduleRepository
from application.ports import JobRepository, QueueSettingsRepository, ScheduleRepository
from tests.contracts.cancel_other import CancelOtherContract
from tests.contracts.flow import FlowControlContract
from tests.contracts.repositories import JobRepositoryContract, ScheduleRepositoryContract


@pytest.fixture
def store() -> InMemoryJobRepository:
    return InMemoryJobRepository()


@pytest.fixture
def jobs(store: InMemoryJobRepository) -> JobRepository:
    return store


@pytest.fixture
def schedules(store: InMemoryJobRepository) -> ScheduleRepository:
    return InMemoryScheduleRepository(store)


@pytest.fixture
def queue_settings(store: InMemoryJobRepository) -> QueueSettingsRepository:
    return InMemoryQueueSettingsRepository(store)


class TestInMemoryFlowControl(FlowControlContract):
    pass


class TestInMemoryCancelOther(CancelOtherContract):
    pass


class TestInMemoryJobRepository(JobRepositoryContract):
    pass


class TestInMemoryScheduleRepository(ScheduleRepositoryContract):
    pass
