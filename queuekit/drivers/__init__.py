"""Queue drivers and the table that names them.

Built-in drivers are imported only when first used, so the Redis or PostgreSQL client need not be
installed to use another driver. Third-party packages register through the ``queuekit.drivers``
entry-point group; applications call ``register_driver``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError
from .base import Capability, QueueDriver, QueueStats

__all__ = [
    "Capability",
    "DriverFactory",
    "QueueDriver",
    "QueueStats",
    "create_driver",
    "driver_names",
    "register_driver",
]

#: ``factory(options) -> QueueDriver``: a driver class or any callable.
DriverFactory = Callable[[dict[str, Any]], QueueDriver]

# Fixed table: a config can only pick among these names, never point at an import path.
_BUILTIN: dict[str, tuple[str, str]] = {
    "memory": ("queuekit.drivers.memory", "MemoryDriver"),
    "sync": ("queuekit.drivers.sync", "SyncDriver"),
    "file": ("queuekit.drivers.file", "FileDriver"),
    "redis": ("queuekit.drivers.redis", "RedisDriver"),
    "database": ("queuekit.drivers.database", "create_database_driver"),
}
_registered: dict[str, DriverFactory] = {}
_lock = threading.Lock()


def register_driver(name: str, factory: DriverFactory) -> None:
    """Make ``factory`` available as ``{"queue": {"driver": name}}``.

    ``factory`` receives the dict ``config["queue"][name]`` (empty if absent) and returns a
    ``QueueDriver``. Registering a built-in name replaces the built-in.

    Example::

        queuekit.register_driver("sqs", SqsDriver)
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"driver name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"driver factory for {name!r} must be callable, got {factory!r}")
    with _lock:
        _registered[name] = factory


def _entry_point_factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="queuekit.drivers")}


def driver_names() -> list[str]:
    """Every driver name a config may use, sorted."""
    return sorted({*_BUILTIN, *_registered, *_entry_point_factories()})


def _resolve(name: str) -> DriverFactory:
    factory = _registered.get(name)
    if factory is not None:
        return factory
    if name in _BUILTIN:
        module_name, attr = _BUILTIN[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            extra = {"redis": "redis", "database": "postgres/mysql"}.get(name, name)
            raise ConfigError(
                f"queue.driver: driver {name!r} cannot be loaded ({e}); "
                f"install its extra: pip install 'queuekit[{extra}]'"
            ) from e
        return getattr(module, attr)
    ep = _entry_point_factories().get(name)
    if ep is not None:
        return ep.load()
    raise ConfigError(f"queue.driver: unknown driver {name!r}; known: {', '.join(driver_names())}")


def create_driver(name: str, options: dict[str, Any]) -> QueueDriver:
    """Build the driver registered as ``name`` from its config section."""
    driver = _resolve(name)(options)
    if not isinstance(driver, QueueDriver):
        raise ConfigError(
            f"queue.driver: factory for {name!r} returned {type(driver).__name__}, "
            "not a QueueDriver"
        )
    return driver
