"""In-memory QueueSettingsRepository, sharing its dict with the InMemoryJobRepository whose claims obey it."""

from __future__ import annotations

from adapters.memory.jobs import InMemoryJobRepository
from domain.flow import QueueSettings


class InMemoryQueueSettingsRepository:
    def __init__(self, jobs: InMemoryJobRepository) -> None:
        self.stored = jobs.queue_settings

    async def all(self) -> list[QueueSettings]:
        return [self.stored[name] for name in sorted(self.stored)]

    async def get(self, queue: str) -> QueueSettings:
        return self.stored.get(queue) or QueueSettings(queue=queue)

    async def upsert(self, settings: QueueSettings) -> None:
        self.stored[settings.queue] = settings
