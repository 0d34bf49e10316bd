"""The job registry: maps a stored ``job_name`` to the class that rebuilds it.

Resolving is a dict lookup and nothing more: the registry never imports a module or class named by
stored data, so whoever can write to the queue store cannot make a worker run arbitrary code.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .errors import RegistryError, UnknownJobError

if TYPE_CHECKING:
    from .job import QueueJob

__all__ = ["JobRegistry", "default_registry"]


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class JobRegistry:
    """Maps job names (and aliases) to ``QueueJob`` classes.

    Every ``QueueJob`` subclass registers itself in ``default_registry`` when it is defined. Give a
    ``QueueManager`` its own registry (``QueueManager(config, registry=JobRegistry())``) to isolate
    tests.

    Example::

        registry = JobRegistry()
        registry.register(WelcomeEmailJob)
        assert registry.resolve(WelcomeEmailJob.job_name) is WelcomeEmailJob
    """

    def __init__(self) -> None:
        self._classes: dict[str, type[QueueJob]] = {}
        self._lock = threading.Lock()

    def register(self, cls: type[QueueJob]) -> type[QueueJob]:
        """Register ``cls`` under its ``job_name`` and every name in its ``job_aliases``.

        A different class already under one of those names raises ``RegistryError`` naming both,
        unless it has the same module and qualified name (a reloaded module or a notebook cell run
        again), which it replaces. Returns ``cls`` so it can be used as a decorator.
        """
        names = (cls.job_name, *cls.job_aliases)
        with self._lock:
            for name in names:
                existing = self._classes.get(name)
                if (
                    existing is not None
                    and existing is not cls
                    and _origin(existing) != _origin(cls)
                ):
                    raise RegistryError(
                        f"job name {name!r} is taken by {_origin(existing)}; cannot register "
                        f"{_origin(cls)} under it too (set a distinct job_name on one of them)"
                    )
            for name in names:
                self._classes[name] = cls
        return cls

    def resolve(self, name: str) -> type[QueueJob]:
        """The class registered under ``name``; ``UnknownJobError`` if there is none."""
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownJobError(
                f"unknown job type {name!r}: no class is registered under that name or alias "
                f"(is the module that defines it imported by this worker?)"
            ) from None

    def names(self) -> list[str]:
        """Every registered name and alias, sorted."""
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __len__(self) -> int:
        return len(self._classes)


#: The registry every ``QueueJob`` subclass joins when it is defined.
default_registry = JobRegistry()
