"""Throughput over a recent window: jobs finished per queue, final state and bucket (the dashboard's charts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from attrs import frozen

from application.ports import Clock, JobRepository, Throughput
from domain.errors import InvalidInput

HOUR: Final = timedelta(hours=1)
MINUTE: Final = timedelta(minutes=1)
MAX_BUCKETS: Final = 1440


@frozen(kw_only=True)
class ThroughputSeries:
    since: datetime  # start of the first bucket; the last one is the current, partial bucket
    bucket: timedelta
    buckets: int
    counts: list[Throughput]

    def index(self, entry: Throughput) -> int:
        """Position of an entry's bucket in the series, 0 = oldest."""
        return int((entry.start - self.since) / self.bucket)


@frozen
class QueueThroughput:
    jobs: JobRepository
    clock: Clock

    async def __call__(self, *, window: timedelta = HOUR, bucket: timedelta = MINUTE) -> ThroughputSeries:
        """Finished jobs in the `window` up to now, in buckets aligned on multiples of `bucket` since the epoch."""
        if bucket <= timedelta(0) or window < bucket or window / bucket > MAX_BUCKETS or window % bucket:
            raise InvalidInput({"window": f"must be 1 to {MAX_BUCKETS} whole buckets of a positive length"})
        step = bucket.total_seconds()
        current = datetime.fromtimestamp(self.clock.now().timestamp() // step * step, UTC)
        since = current + bucket - window
        return ThroughputSeries(since=since, bucket=bucket, buckets=window // bucket,
                                counts=await self.jobs.throughput(since, bucket))
