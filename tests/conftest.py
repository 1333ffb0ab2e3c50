"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Trio's clock for tests that take it: virtual time jumps whenever every task waits."""
    return trio.testing.MockClock(autojump_threshold=0)
