"""Typed errors raised by queuekit.

Every message names the thing that is wrong (a config key, a job type, a file, a table) and what was
expected, and the original exception is chained with ``raise ... from``.
"""

from __future__ import annotations


class QueueError(Exception):
    """Base class of every error queuekit raises on purpose."""


class ConfigError(QueueError, ValueError):
    """The configuration is invalid; the message starts with the dotted key at fault.

    Example: ``queue.driver: unknown driver 'mem'; known: database, file, memory, redis, sync``.
    """


class RegistryError(QueueError):
    """Two different job classes claim one registry name."""


class UnknownJobError(QueueError, LookupError):
    """A stored job names a job type that no registered class answers to."""


class PayloadError(QueueError, ValueError):
    """A job's payload cannot be serialized to JSON, or fails validation when rebuilt."""


class DriverError(QueueError):
    """The storage backend failed or is unreachable; the message names the backend."""


class CorruptStoreError(DriverError):
    """A stored file, key or row is damaged; the message names it and what was recovered."""


class DuplicateJobError(QueueError):
    """A unique job was dispatched while an equal one is still pending."""


class JobTimeout(QueueError, TimeoutError):
    """A job attempt ran past its timeout and counts as a failed attempt."""


class MaxAttemptsExceeded(QueueError):
    """A job was reserved more often than its retries allow (its worker died or lost the lease)."""


class PermanentError(QueueError):
    """Raise from ``handle()`` to fail the job at once, with no retry.

    Example::

        async def handle(self) -> None:
            if not await user_exists(self.user_id):
                raise PermanentError(f"user {self.user_id} was deleted")
    """


class Retry(QueueError):
    """Raise from ``handle()`` to ask for a retry after ``delay`` seconds.

    The retry still counts against ``max_retries``; once they are used up the job fails for good.

    Example::

        raise Retry(delay=30, reason="rate limited")
    """

    def __init__(self, delay: float = 0.0, reason: str = "") -> None:
        if delay < 0:
            raise ValueError(f"Retry delay must be >= 0 seconds, got {delay!r}")
        self.delay = float(delay)
        self.reason = reason
        super().__init__(reason or f"retry requested in {self.delay:g}s")
