"""Job classes the contract suite and the multi-process helpers dispatch.

They have fixed ``job_name``s so that worker processes rebuild them by name.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import ClassVar

from ..errors import PermanentError
from ..job import QueueJob

__all__ = ["AlwaysFails", "ContractJob", "ProbeJob", "append_line"]


def append_line(path: str, line: str) -> None:
    """Append one line with a single O_APPEND write, so lines from many processes never mix."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class ContractJob(QueueJob):
    """Appends ``n`` to ``ContractJob.ran`` (in-process runs only)."""

    job_name: ClassVar[str] = "queuekit.testing.contract"
    ran: ClassVar[list[int]] = []
    n: int

    async def handle(self) -> None:
        ContractJob.ran.append(self.n)


class AlwaysFails(QueueJob):
    """Fails every attempt; ``permanent`` fails it at once."""

    job_name: ClassVar[str] = "queuekit.testing.always_fails"
    max_retries: ClassVar[int] = 1
    permanent: bool = False

    async def handle(self) -> None:
        if self.permanent:
            raise PermanentError("permanent failure requested")
        raise RuntimeError("failure requested")


class ProbeJob(QueueJob):
    """Logs ``start``/``end`` lines (job id, pid, attempt, time) to ``log_path``.

    The first ``slow_attempts`` attempts sleep ``sleep`` seconds between the two lines, so a test
    can kill a worker mid-job and see the job run again.
    """

    job_name: ClassVar[str] = "queuekit.testing.probe"
    max_retries: ClassVar[int] = 5
    log_path: str
    sleep: float = 0.0
    slow_attempts: int = 1_000_000

    async def handle(self) -> None:
        ctx = self.context
        append_line(
            self.log_path, f"start {ctx.job_id} {os.getpid()} {ctx.attempt} {time.time():.6f}"
        )
        if self.sleep and ctx.attempt <= self.slow_attempts:
            await asyncio.sleep(self.sleep)
        append_line(
            self.log_path, f"end {ctx.job_id} {os.getpid()} {ctx.attempt} {time.time():.6f}"
        )
