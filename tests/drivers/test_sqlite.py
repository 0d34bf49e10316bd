"""The SQLite dialect of the database driver: the contract, restarts, bad rows, transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from queuekit.drivers.database.sqlite import SQLiteDriver
from queuekit.testing import DriverContract


def sqlite_options(path: Path, **extra: object) -> dict[str, object]:
    """Options of a SQLite queue in ``path`` (a short poll keeps cross-process tests quick)."""
    return {"url": f"sqlite:///{path}", "poll_interval": 0.05, **extra}


class TestSQLiteDriver(DriverContract):
    @pytest.fixture
    async def driver(self, tmp_path: Path) -> AsyncIterator[SQLiteDriver]:
        d = SQLiteDriver(sqlite_options(tmp_path / "jobs.db"))
        await d.connect()
        yield d
        await d.close()

    @pytest.fixture
    def open_driver(self, tmp_path: Path) -> Callable[[], Awaitable[SQLiteDriver]]:
        async def _open() -> SQLiteDriver:
            d = SQLiteDriver(sqlite_options(tmp_path / "jobs.db"))
            await d.connect()
            return d

        return _open
