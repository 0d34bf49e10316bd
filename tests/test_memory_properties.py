"""The memory driver's ordering, as a property: priority, then available_at, then push order."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from queuekit.clock import now
from queuekit.drivers.memory import MemoryDriver
from queuekit.testing import make_record

jobs = st.lists(
    st.tuples(
        st.integers(-3, 3),  # priority
        st.integers(0, 5),  # seconds in the past the job became available
        st.sampled_from(["a", "b"]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(jobs, st.booleans())
def test_reserve_order_matches_the_documented_sort(
    specs: list[tuple[int, int, str]], batch: bool
) -> None:
    async def run() -> None:
        driver = MemoryDriver()
        t = now()
        records = [
            make_record(i, priority=p, available_at=t - ago, queue=q)
            for i, (p, ago, q) in enumerate(specs)
        ]
        if batch:
            await driver.push_many(records)
        else:
            for record in records:
                await driver.push(record)
        expected = sorted(range(len(records)), key=lambda i: (-specs[i][0], -specs[i][1], i))
        taken = []
        while (record := await driver.reserve(None, lease=30)) is not None:
            taken.append(record.payload["n"])
        assert taken == expected

        # With an explicit list, the first queue that has work wins.
        for record in records:
            record.attempts = 0
        driver = MemoryDriver()
        for record in records:
            await driver.push(record)
        order = []
        while (record := await driver.reserve(["b", "a"], lease=30)) is not None:
            order.append(record.queue)
        assert order == sorted(order, key=lambda q: q != "b")

    asyncio.run(run())
