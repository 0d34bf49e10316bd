"""Configuration: ``QueueConfig`` and the per-concern option models.

``QueueManager`` takes a plain dict shaped like this (or a ``QueueConfig``)::

    {"queue": {"driver": "memory", "default_queue": "default",
               "file": {...}, "redis": {...}, "database": {...},
               "worker": {"concurrency": 1, "delay": 0, "max_jobs": None, "timeout": None,
                          "idle_wait": 1.0, "grace": 30, "job_timeout": None}}}

Invalid values raise ``ConfigError`` naming the dotted key, e.g.
``queue.worker.concurrency: Input should be greater than or equal to 1 (got 0)``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

__all__ = ["QueueConfig", "QueueSection", "WorkerConfig", "parse_options"]

M = TypeVar("M", bound=BaseModel)


class WorkerConfig(BaseModel):
    """Worker defaults; ``start_worker()`` arguments override them one by one.

    ``delay`` pauses after each job; ``timeout`` is the worker's wall-time limit; ``idle_wait`` is
    how long one wait for work lasts before the worker checks its stop conditions again; ``grace``
    is how long a graceful stop lets running jobs finish; ``job_timeout`` applies to jobs that set
    no ``timeout`` of their own. All in seconds.
    """

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(1, ge=1)
    delay: float = Field(0.0, ge=0)
    max_jobs: int | None = Field(None, ge=1)
    timeout: float | None = Field(None, gt=0)
    idle_wait: float = Field(1.0, gt=0)
    grace: float = Field(30.0, ge=0)
    job_timeout: float | None = Field(None, gt=0)


class QueueSection(BaseModel):
    """The ``queue`` section: driver name, default queue, worker options, driver sections.

    Any other key is a driver's own section (``file``, ``redis``, ``database`` or the name a custom
    driver was registered under) and is passed to that driver's factory as a dict.
    """

    model_config = ConfigDict(extra="allow")

    driver: str = Field("memory", min_length=1)
    default_queue: str = Field("default", min_length=1)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)


class QueueConfig(BaseModel):
    """The whole queuekit configuration; keys beside ``queue`` are ignored (app config)."""

    model_config = ConfigDict(extra="ignore")

    queue: QueueSection = Field(default_factory=QueueSection)

    @classmethod
    def parse(cls, config: QueueConfig | dict[str, Any] | None) -> QueueConfig:
        """Validate ``config`` (None means all defaults); ``ConfigError`` names the bad key."""
        if config is None:
            return cls()
        if isinstance(config, QueueConfig):
            return config
        if not isinstance(config, dict):
            raise ConfigError(
                f"config: expected a dict or QueueConfig, got {type(config).__name__}"
            )
        return parse_options(cls, config, "")

    def driver_options(self, name: str) -> dict[str, Any]:
        """The section ``queue.<name>`` as a dict (empty if absent)."""
        section = (self.queue.model_extra or {}).get(name, {})
        if section is None:
            return {}
        if not isinstance(section, dict):
            raise ConfigError(
                f"queue.{name}: expected a mapping of options, got {type(section).__name__}"
            )
        return dict(section)


def parse_options(model: type[M], options: Any, prefix: str) -> M:
    """Validate ``options`` into ``model``; errors become ``ConfigError`` with dotted keys.

    Drivers use it for their sections: ``parse_options(FileOptions, opts, "queue.file")``.
    """
    try:
        return model.model_validate(options)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            problems.append(f"{key or prefix or 'config'}: {err['msg']}{got}")
        raise ConfigError("; ".join(problems)) from e
