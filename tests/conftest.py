"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio.testing

from tests.postgres import Cluster, cluster


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Trio's clock for tests that take it: virtual time jumps whenever every task waits."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the session, started on first use."""
    with cluster() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A new, empty database on it."""
    return postgres_cluster.database()
