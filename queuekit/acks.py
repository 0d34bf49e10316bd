"""``AckBatcher``: coalesces the ``complete`` calls of jobs that finish together.

With several jobs running at once, acknowledging each one is a round trip of its own; jobs that
finish in the same turn of the event loop are acknowledged with one ``complete_many`` call instead.
Each caller still learns whether *its* lease held.
"""

from __future__ import annotations

import asyncio

from .drivers.base import QueueDriver
from .record import JobRecord

__all__ = ["AckBatcher"]


class AckBatcher:
    """Batches ``complete`` calls into ``driver.complete_many``; at most ``limit`` per call."""

    def __init__(self, driver: QueueDriver, limit: int = 100) -> None:
        self.driver = driver
        self.limit = limit
        self._pending: list[tuple[JobRecord, asyncio.Future[bool]]] = []
        self._flushing = False
        self._task: asyncio.Task[None] | None = None

    async def complete(self, record: JobRecord) -> bool:
        """Acknowledge ``record`` with the next batch; True if its lease still held."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        # Runs one loop turn after the first ack, so every job finishing in that turn joins it.
        self._task = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.limit], self._pending[self.limit :]
                try:
                    results = await self.driver.complete_many([record for record, _ in batch])
                except BaseException as e:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    if isinstance(e, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), ok in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(ok)
        finally:
            self._flushing = False
