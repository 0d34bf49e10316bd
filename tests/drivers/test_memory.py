"""The memory and sync drivers against the driver contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from queuekit.drivers.memory import MemoryDriver
from queuekit.testing import DriverContract


class TestMemoryDriver(DriverContract):
    @pytest.fixture
    async def driver(self) -> AsyncIterator[MemoryDriver]:
        d = MemoryDriver({})
        await d.connect()
        yield d
        await d.close()
