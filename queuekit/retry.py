"""The retry policy: how long a failed attempt waits before the next one."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before retry number ``n`` (1 = the first retry), in seconds.

    - ``delay`` a number: every retry waits that long; a list: retry ``n`` uses item ``n-1`` and
      the last item repeats.
    - ``backoff``: multiply by ``2 ** (n - 1)``.
    - ``max_delay``: upper bound, applied before jitter.
    - ``jitter``: scale by a random factor in [0.5, 1.0], so jobs that failed together do not
      retry together.

    Example::

        policy = RetryPolicy(delay=[5, 30, 300])
        assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [5, 30, 300, 300]
    """

    delay: float | Sequence[float] = 0.0
    backoff: bool = False
    max_delay: float = 3600.0
    jitter: bool = False

    @classmethod
    def for_job(cls, job_cls: type) -> RetryPolicy:
        """The policy a ``QueueJob`` class declares through its ``retry_*`` settings."""
        return cls(
            delay=job_cls.retry_delay,
            backoff=job_cls.retry_backoff,
            max_delay=job_cls.retry_max_delay,
            jitter=job_cls.retry_jitter,
        )

    def delay_for(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based); never negative."""
        if retry < 1:
            raise ValueError(f"retry number must be >= 1, got {retry}")
        if isinstance(self.delay, (int, float)):
            base = float(self.delay)
        else:
            steps = list(self.delay)
            base = float(steps[min(retry, len(steps)) - 1]) if steps else 0.0
        if self.backoff:
            # Cap the exponent so a job with thousands of retries cannot overflow the float.
            base *= 2.0 ** min(retry - 1, 64)
        value = max(0.0, min(base, float(self.max_delay)))
        if self.jitter and value > 0:
            value *= (rng or random).uniform(0.5, 1.0)
        return value
