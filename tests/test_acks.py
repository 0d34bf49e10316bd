"""Acknowledgements of jobs that finish together go out in one batch, each fenced."""

from __future__ import annotations

import asyncio
from typing import Any

from queuekit.acks import AckBatcher
from queuekit.drivers.memory import MemoryDriver
from queuekit.testing import make_record


class CountingDriver(MemoryDriver):
    def __init__(self) -> None:
        super().__init__({})
        self.batches: list[int] = []

    async def complete_many(self, records: Any) -> list[bool]:
        self.batches.append(len(records))
        return await super().complete_many(records)


async def test_completions_in_one_turn_share_a_batch_and_keep_their_fence() -> None:
    driver = CountingDriver()
    await driver.push_many([make_record(i) for i in range(3)])
    records = await driver.reserve_many(None, lease=30, limit=3)
    forged = records[1].copy()
    forged.lease_token = "stolen"
    batcher = AckBatcher(driver)
    results = await asyncio.gather(*(batcher.complete(r) for r in (records[0], forged, records[2])))
    assert results == [True, False, True]
    assert driver.batches == [3]
    assert await driver.complete(records[1]) is True, "the forged ack left the real lease alone"


async def test_batches_respect_the_limit() -> None:
    driver = CountingDriver()
    await driver.push_many([make_record(i) for i in range(5)])
    records = await driver.reserve_many(None, lease=30, limit=5)
    batcher = AckBatcher(driver, limit=2)
    assert await asyncio.gather(*(batcher.complete(r) for r in records)) == [True] * 5
    assert driver.batches == [2, 2, 1]
