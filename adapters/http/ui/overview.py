"""/ui: per queue, jobs by state, the oldest waiting job and the last hour's throughput."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from adapters.http.ui.charts import chart
from adapters.http.ui.render import page
from application.manage_jobs import QueueOverview
from application.throughput import QueueThroughput


@get("/")
async def overview(request: Request[Any, Any, Any], queue_overview: NamedDependency[QueueOverview],
                   queue_throughput: NamedDependency[QueueThroughput], now: NamedDependency[datetime]) -> Template:
    stats = await queue_overview()
    series = await queue_throughput()
    totals: Counter[str] = Counter()
    for queue in stats:
        totals.update(queue.counts)
    waiting = [q.oldest_queued_at for q in stats if q.oldest_queued_at is not None]
    return page(request, "overview.html", now=now, queues=stats, totals=totals, oldest=min(waiting, default=None),
                chart=chart(series, width=720, height=120), charts={q.queue: chart(series, q.queue) for q in stats})
