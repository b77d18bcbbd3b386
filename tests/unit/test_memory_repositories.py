"""The repository contracts, run against the in-memory adapters."""

from __future__ import annotations

import pytest

from adapters.memory.jobs import InMemoryJobRepository
from adapters.memory.schedules import InMemoryScheduleRepository
from application.ports import JobRepository, ScheduleRepository
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


class TestInMemoryJobRepository(JobRepositoryContract):
    pass


class TestInMemoryScheduleRepository(ScheduleRepositoryContract):
    pass
