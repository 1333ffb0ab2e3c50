"""What the actors measure for `/metrics`: how long commits take, and what appends add.

The HTTP layer exposes these (streams/metrics.py); the actors only count, one set per
registry, so each app (and each test) has its own. Counts are plain integers, read when
scraped: an append pays an addition, not a lock.
"""

from __future__ import annotations

import time

from prometheus_client import Histogram

from actors.storage import Log

# fdatasync on SSDs takes 0.1-5 ms, on disks and network volumes tens of ms; memory: µs.
COMMIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip


class ActorMetrics:
    """Commits timed, and data appended, by the actors of one registry."""

    def __init__(self) -> None:
        self.commit_seconds = Histogram(
            "durable_streams_commit_seconds",
            "Time to commit staged records to a stream's log (write, and fdatasync in"
            " file-durable mode): appends (one per group commit), creates and soft deletes",
            buckets=COMMIT_BUCKETS,
            registry=None,  # registered with its app's registry by the HTTP layer
        )
        self.append_bytes = 0  # data bytes of the appends committed
        self.append_records = 0  # appends committed (records with data, or closing)

    async def commit(self, log: Log) -> None:
        """`log.commit()`, timed."""
        began = time.perf_counter()
        await log.commit()
        self.commit_seconds.observe(time.perf_counter() - began)

    def appended(self, records: int, size: int) -> None:
        self.append_records += records
        self.append_bytes += size
