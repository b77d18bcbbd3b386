"""/v1/queues: per queue, counts by state, the age of the oldest queued job and last minute's throughput."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, get
from litestar.di import NamedDependency

from adapters.http.problems import READS
from adapters.http.views import QueueList, QueueView
from application.manage_jobs import QueueOverview


class QueuesController(Controller):
    path = "/queues"
    tags = ["queues"]

    @get("/", responses=READS)
    async def list_queues(self, queue_overview: NamedDependency[QueueOverview],
                          now: NamedDependency[datetime]) -> QueueList:
        stats = await queue_overview()
        return QueueList(items=[QueueView.of(s, now) for s in stats])
