"""Where the test servers are, and what a test does when one is missing.

Driver tests run against the real servers of the machine. On a laptop without one they skip; with
``QUEUEKIT_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing server fails the test instead.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REDIS_URL = os.environ.get("QUEUEKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "QUEUEKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("QUEUEKIT_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def services_required() -> bool:
    """True when a missing server must fail the run (CI)."""
    return os.environ.get("QUEUEKIT_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def require_service(name: str, error: BaseException) -> NoReturn:
    """Skip (or, when services are required, fail) because ``name`` is unreachable."""
    message = f"{name} is not reachable: {type(error).__name__}: {error}"
    if services_required():
        pytest.fail(f"{message} (QUEUEKIT_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(message)
