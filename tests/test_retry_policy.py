"""The retry-delay policy, as properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuekit import RetryPolicy

delays = st.floats(min_value=0, max_value=1e4, allow_nan=False)
retries = st.integers(min_value=1, max_value=200)


@given(delays, retries)
def test_a_number_is_used_for_every_retry(delay: float, retry: int) -> None:
    assert RetryPolicy(delay=delay, max_delay=1e9).delay_for(retry) == pytest.approx(delay)


@given(st.lists(delays, min_size=1, max_size=6), retries)
def test_a_list_is_used_per_retry_and_its_last_value_repeats(
    steps: list[float], retry: int
) -> None:
    expected = steps[min(retry, len(steps)) - 1]
    assert RetryPolicy(delay=steps, max_delay=1e9).delay_for(retry) == pytest.approx(expected)


@given(delays, retries, st.floats(min_value=0, max_value=1e5))
def test_backoff_doubles_and_is_capped(delay: float, retry: int, cap: float) -> None:
    policy = RetryPolicy(delay=delay, backoff=True, max_delay=cap)
    value = policy.delay_for(retry)
    assert 0 <= value <= cap
    assert value == pytest.approx(min(delay * 2.0 ** min(retry - 1, 64), cap))


@given(delays, retries, st.integers(0, 2**32))
def test_jitter_stays_within_half_and_full_delay(delay: float, retry: int, seed: int) -> None:
    plain = RetryPolicy(delay=delay, backoff=True, max_delay=3600).delay_for(retry)
    jittered = RetryPolicy(delay=delay, backoff=True, max_delay=3600, jitter=True).delay_for(
        retry, random.Random(seed)
    )
    assert plain * 0.5 - 1e-9 <= jittered <= plain + 1e-9


def test_seed_example_escalating_delays() -> None:
    policy = RetryPolicy(delay=[5, 30, 300])
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [5, 30, 300, 300]


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="retry number must be >= 1"):
        RetryPolicy().delay_for(0)
