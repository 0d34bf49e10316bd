"""``QueueJob``: the base class of every job, and ``JobContext``, what a running job knows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from .registry import default_registry

if TYPE_CHECKING:
    from .manager import QueueManager

__all__ = ["JobContext", "QueueJob", "attach_context"]


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a job knows about its current run, as ``self.context`` inside ``handle()``.

    ``attempt`` is 1 on the first run and counts every reservation, including one whose worker
    died. ``enqueued_at`` is the epoch second the job was dispatched.
    """

    job_id: str
    attempt: int
    max_retries: int
    queue: str
    enqueued_at: float
    manager: QueueManager | None = None


class QueueJob(BaseModel):
    """Base class of a background job: its fields are its payload, ``handle()`` is its work.

    Fields are validated when the job is built and again when a worker rebuilds it from storage.
    Class-level settings are ``ClassVar`` and may be overridden per subclass.

    Example::

        class WelcomeEmailJob(QueueJob):
            user_email: str
            user_name: str
            max_retries: ClassVar[int] = 3
            queue: ClassVar[str] = "emails"

            async def handle(self) -> None:
                await send_welcome(self.user_email, self.user_name)

    ``handle()`` may be ``async def`` or a plain ``def``; a plain one runs in a worker thread so it
    never blocks the event loop.
    """

    #: Retries after the first attempt: 0 means the job runs once.
    max_retries: ClassVar[int] = 3
    #: Queue the job goes to unless ``dispatch(queue=...)`` says otherwise.
    queue: ClassVar[str] = "default"
    #: Higher runs first.
    priority: ClassVar[int] = 0
    #: Seconds an attempt may run before it is cancelled and counted as failed; None = no limit.
    timeout: ClassVar[float | None] = None
    #: Seconds before a retry: a number, or a list used per retry whose last value repeats.
    retry_delay: ClassVar[float | list[float] | tuple[float, ...]] = 0
    #: Double the delay on every retry: ``retry_delay * 2 ** (retry - 1)``.
    retry_backoff: ClassVar[bool] = False
    #: Upper bound of any retry delay, in seconds.
    retry_max_delay: ClassVar[float] = 3600
    #: Spread retries out by a random factor in [0.5, 1.0] of the computed delay.
    retry_jitter: ClassVar[bool] = False
    #: Registry key written in stored records; defaults to ``module.QualName``. Set it explicitly
    #: to keep stored jobs valid when the class moves or is renamed.
    job_name: ClassVar[str] = ""
    #: Older names this class still answers to, so renamed jobs keep resolving.
    job_aliases: ClassVar[tuple[str, ...]] = ()

    # The running attempt's JobContext is kept in the instance ``__dict__`` under ``_context``
    # (the runner sets it) rather than declared as a pydantic PrivateAttr: a private attribute
    # makes every construction initialise it, which quadruples the cost of building a job
    # (~2.6 µs instead of ~0.6 µs), and jobs are built for every dispatch and every run.
    # pydantic leaves undeclared underscore names out of dumps, equality and validation.

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # Only a name set on this very class counts: a subclass must not inherit its parent's
        # registry key, or the two would collide.
        if not cls.__dict__.get("job_name"):
            cls.job_name = f"{cls.__module__}.{cls.__qualname__}"
        if "job_aliases" not in cls.__dict__:
            cls.job_aliases = ()
        default_registry.register(cls)

    async def handle(self) -> Any:
        """Do the job's work. Override it (``async def`` or plain ``def``)."""
        raise NotImplementedError(f"{type(self).__name__} must define handle()")

    def failed(self, error: BaseException) -> Any:
        """Called once when the job fails for good (retries used up, or a permanent error).

        Override it (sync or async) to alert, compensate or clean up. The default does nothing.
        """
        return None

    def unique_key(self) -> str | None:
        """Return a key to make the job unique while it is pending; None (default) = not unique.

        On drivers with the ``UNIQUE`` capability, dispatching a job whose key equals that of a job
        still queued or running raises ``DuplicateJobError``.
        """
        return None

    @property
    def display_name(self) -> str:
        """Human-readable name for logs and metrics; the class name unless overridden."""
        return type(self).__name__

    @property
    def context(self) -> JobContext:
        """The ``JobContext`` of the running attempt; only set while ``handle()`` runs."""
        context: JobContext | None = self.__dict__.get("_context")
        if context is None:
            raise RuntimeError(f"{type(self).__name__}.context is only available while it runs")
        return context

    @property
    def attempt(self) -> int:
        """Shortcut for ``self.context.attempt`` (1-based)."""
        return self.context.attempt

    def to_json(self) -> dict[str, Any]:
        """The payload stored for this job; must be JSON-safe. Override with ``from_json``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueueJob:
        """Rebuild a job from ``to_json()`` output, validating every field."""
        return cls.model_validate(data)


def attach_context(job: QueueJob, context: JobContext | None) -> None:
    """Give ``job`` the context of the attempt about to run (the runner calls it).

    Written straight into the instance ``__dict__``: pydantic's ``__setattr__`` costs more
    than a microsecond per job, and the context is not a field.
    """
    job.__dict__["_context"] = context
