"""The ``database`` driver: one config section, a dialect module per database.

The ``url`` scheme picks the dialect: ``sqlite:///path/to/jobs.db`` (stdlib ``sqlite3``),
``postgresql://user@host/db`` (psycopg 3) or ``mysql://user@host/db`` (MySQL and MariaDB).
"""

from __future__ import annotations

import importlib
from typing import Any

from ...errors import ConfigError
from ..base import QueueDriver

__all__ = ["create_database_driver"]

# scheme -> (module, class, extra to install)
_DIALECTS: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("queuekit.drivers.database.sqlite", "SQLiteDriver", None),
    "postgresql": ("queuekit.drivers.database.postgres", "PostgresDriver", "postgres"),
    "postgres": ("queuekit.drivers.database.postgres", "PostgresDriver", "postgres"),
    "mysql": ("queuekit.drivers.database.mysql", "MySQLDriver", "mysql"),
    "mariadb": ("queuekit.drivers.database.mysql", "MySQLDriver", "mysql"),
}


def create_database_driver(options: dict[str, Any]) -> QueueDriver:
    """Build the dialect driver that ``options["url"]`` names (the ``queue.database`` section)."""
    url = options.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"queue.database.url: expected a URL such as 'sqlite:///storage/queue/jobs.db', "
            f"'postgresql://user@host/db' or 'mysql://user@host/db', got {url!r}"
        )
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in _DIALECTS:
        raise ConfigError(
            f"queue.database.url: unsupported scheme {scheme!r}; known: "
            f"{', '.join(sorted(_DIALECTS))}"
        )
    module_name, class_name, extra = _DIALECTS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = f"; install it with pip install 'queuekit[{extra}]'" if extra else ""
        raise ConfigError(
            f"queue.database.url: the {scheme} dialect cannot be loaded ({e}){hint}"
        ) from e
    driver_cls = getattr(module, class_name)
    return driver_cls(options)
