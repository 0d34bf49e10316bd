"""queuekit: background jobs for Python, one API over many queue backends.

Example::

    from typing import ClassVar
    from queuekit import QueueJob, QueueManager

    class WelcomeEmailJob(QueueJob):
        user_email: str
        queue: ClassVar[str] = "emails"

        async def handle(self) -> None:
            ...

    async with QueueManager({"queue": {"driver": "memory"}}) as qm:
        await qm.dispatch(WelcomeEmailJob(user_email="ann@example.com"))
        await qm.start_worker(max_jobs=1)
"""

from .config import QueueConfig, WorkerConfig
from .drivers import Capability, QueueDriver, register_driver
from .errors import (
    ConfigError,
    CorruptStoreError,
    DriverError,
    DuplicateJobError,
    JobTimeout,
    MaxAttemptsExceeded,
    PayloadError,
    PermanentError,
    QueueError,
    RegistryError,
    Retry,
    UnknownJobError,
)
from .job import JobContext, QueueJob
from .manager import QueueManager
from .metrics import MetricsCollector
from .middleware import Middleware, Outcome
from .record import JobRecord
from .registry import JobRegistry, default_registry
from .retry import RetryPolicy
from .runner import Execution, JobRunner
from .worker import StopReason, Worker, WorkerOptions, WorkerSummary

__version__ = "0.1.0"

__all__ = [
    "Capability",
    "ConfigError",
    "CorruptStoreError",
    "DriverError",
    "DuplicateJobError",
    "Execution",
    "JobContext",
    "JobRecord",
    "JobRegistry",
    "JobRunner",
    "JobTimeout",
    "MaxAttemptsExceeded",
    "MetricsCollector",
    "Middleware",
    "Outcome",
    "PayloadError",
    "PermanentError",
    "QueueConfig",
    "QueueDriver",
    "QueueError",
    "QueueJob",
    "QueueManager",
    "RegistryError",
    "Retry",
    "RetryPolicy",
    "StopReason",
    "UnknownJobError",
    "Worker",
    "WorkerConfig",
    "WorkerOptions",
    "WorkerSummary",
    "default_registry",
    "register_driver",
]
