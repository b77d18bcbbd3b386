"""/v1/queues: per queue, counts by state, the age of the oldest queued job, last minute's throughput and its
runtime limits; PATCH changes the limits (SPEC §6)."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, get, patch
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from adapters.http.bodies import QueuePatch
from adapters.http.problems import READS, WRITES
from adapters.http.views import QueueList, QueueSettingsView, QueueView
from application.manage_jobs import QueueOverview
from application.manage_queues import UpdateQueue


class QueuesController(Controller):
    path = "/queues"
    tags = ["queues"]

    @get("/", responses=READS)
    async def list_queues(self, queue_overview: NamedDependency[QueueOverview],
                          now: NamedDependency[datetime]) -> QueueList:
        stats = await queue_overview()
        return QueueList(items=[QueueView.of(s, now) for s in stats])

    @patch("/{name:str}", responses=WRITES)
    async def update(self, name: FromPath[str], data: JSONBody[QueuePatch],
                     update_queue: NamedDependency[UpdateQueue]) -> QueueSettingsView:
        """Change a queue's limits across the cluster: `max_running` (running jobs), `max_per_second` (starts per
        second), `paused` (no new starts; running jobs finish). Absent fields keep their value; null removes a
        limit. Every worker applies the change within a second."""
        return QueueSettingsView.of(await update_queue(name, data.changes()))
