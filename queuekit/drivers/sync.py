"""``SyncDriver``: runs each job at once, in the caller of ``dispatch``.

Nothing is queued for later: ``dispatch`` runs the job through the same runner a worker uses
(metrics, callbacks, ``failed()``), retrying at once while retries remain, and raises the last
exception if the job still fails. Useful in tests and scripts that want no background work.
"""

from __future__ import annotations

from typing import Any

from ..record import JobRecord
from .base import Capability
from .memory import MemoryDriver

__all__ = ["SyncDriver"]


class SyncDriver(MemoryDriver):
    """Inline driver: the manager runs a pushed job before ``dispatch`` returns.

    It keeps the in-flight job and the failed store in memory (``failed_jobs()`` works). Retry
    delays are ignored: a retry runs at once.
    """

    name = "sync"
    capabilities = Capability.PRIORITY | Capability.INLINE

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)

    async def push(self, record: JobRecord, **options: Any) -> bool:
        # A delay would only make the caller wait; an inline driver runs the job now.
        record.available_at = min(record.available_at, record.created_at)
        return await super().push(record, **options)

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        return await super().release(record, delay=0.0, error=error)
