"""``RedisAdmin``: what ``RedisDriver`` offers an operator: stats, failed jobs, purging.

A base class of the driver, using its transport (``_t``) and key layout (``_keys_of``). Bulk
work goes in chunks of ``CHUNK`` jobs per script run, so one call never keeps Redis busy for
long. The hot path (push, reserve, settling a lease) stays in ``redis.py``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..clock import now
from ..errors import CorruptStoreError
from ..record import JobRecord
from . import redis_admin_scripts as scripts
from . import redis_records as storage
from .base import QueueStats
from .redis_connection import RedisTransport

__all__ = ["CHUNK", "RedisAdmin"]

log = logging.getLogger("queuekit.drivers.redis")

CHUNK = 1000  # jobs per script run in bulk maintenance, bounding how long Redis is busy


class RedisAdmin:
    """Stats, failed-job management and purging of ``RedisDriver`` (one of its bases)."""

    if TYPE_CHECKING:  # provided by RedisDriver

        def _t(self) -> RedisTransport: ...

        def _keys_of(self, queue: str) -> list[str]: ...

        def _source(self, queue: str, job_id: str) -> str: ...

        async def _known_queues(self) -> list[str]: ...

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        names = list(dict.fromkeys(queues)) if queues is not None else await self._known_queues()
        if not names:
            return {}
        at = repr(now())
        replies = await self._t().run_scripts(
            [(scripts.STATS, self._keys_of(q), [at]) for q in names]
        )
        # A lease that ran out counts as pending: the next reservation takes the job back.
        return {
            q: {
                "pending": int(ready) + int(due) + int(expired),
                "delayed": int(later),
                "reserved": int(held),
                "failed": int(failed),
            }
            for q, (ready, due, later, expired, held, failed) in zip(names, replies, strict=True)
        }

    async def _failed_records(
        self, names: Sequence[str], args: Sequence[Any]
    ) -> dict[str, list[JobRecord]]:
        """Failed records per queue, via FAILED_PAGE with ``args``; corrupt ones are logged."""
        if not names:
            return {}
        replies = await self._t().run_scripts(
            [(scripts.FAILED_PAGE, self._keys_of(q), args) for q in names]
        )
        out: dict[str, list[JobRecord]] = {}
        for queue, reply in zip(names, replies, strict=True):
            for i in range(0, len(reply), 2):
                job_id = storage.text(reply[i])
                try:
                    where = functools.partial(self._source, queue, job_id)
                    record = storage.decode(reply[i + 1], where)
                    out.setdefault(queue, []).append(record)
                except CorruptStoreError as e:
                    log.error("queuekit: failed job skipped: %s", e)
        return out

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        names = [queue] if queue is not None else await self._known_queues()
        found = await self._failed_records(names, ["page", limit])
        records = [r for group in found.values() for r in group]
        records.sort(key=lambda r: (r.failed_at or 0.0, r.id))
        return records[:limit]

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        names = await self._known_queues()
        if ids is not None:
            moved = 0
            for start in range(0, len(ids), CHUNK):
                chunk = ["ids", *ids[start : start + CHUNK]]
                moved += await self._requeue(await self._failed_records(names, chunk))
            return moved
        moved = 0
        while True:
            batch = await self._failed_records(names, ["page", CHUNK])
            count = await self._requeue(batch)
            moved += count
            if count == 0 or all(len(group) < CHUNK for group in batch.values()):
                return moved

    async def _requeue(self, found: dict[str, list[JobRecord]]) -> int:
        at = now()
        calls = []
        for queue, records in found.items():
            args: list[Any] = []
            for record in records:
                fresh = storage.unleased(record)
                fresh.attempts = 0
                fresh.failed_at = None
                fresh.available_at = at
                score, member, _ = storage.placement(fresh, at)
                args += [fresh.id, storage.body(fresh), score, member]
            calls.append((scripts.RETRY_FAILED, self._keys_of(queue), args))
        if not calls:
            return 0
        return sum(int(n) for n in await self._t().run_scripts(calls))

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        names = await self._known_queues()
        if not names:
            return 0
        count = 0
        if ids is not None:
            for start in range(0, len(ids), CHUNK):
                chunk = ["ids", *ids[start : start + CHUNK]]
                calls = [(scripts.FORGET_FAILED, self._keys_of(q), chunk) for q in names]
                count += sum(int(n) for n in await self._t().run_scripts(calls))
            return count
        for queue in names:
            while True:
                n = int(
                    await self._t().run_script(
                        scripts.FORGET_FAILED, self._keys_of(queue), ["all", CHUNK]
                    )
                )
                count += n
                if n < CHUNK:
                    break
        return count

    async def purge(self, queue: str) -> int:
        count = 0
        while True:
            n = int(await self._t().run_script(scripts.PURGE, self._keys_of(queue), [CHUNK]))
            count += n
            if n < CHUNK:
                return count
