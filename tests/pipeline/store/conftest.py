"""Stores of both backends for the conformance suite: `open_store(clock=...)` opens one, closed after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.engine.store import Store, StoreBackend
from controller.engine.store.postgres import PostgresStore

BACKENDS = ("sqlite", "postgresql")
LEASE_S = 30.0


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., StoreBackend]]:
    """Open the backend's store (the same database every call: a second replica on PostgreSQL)."""
    opened: list[StoreBackend] = []
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None

    def open_(clock: Callable[[], float] | None = None, **kwargs: Any) -> StoreBackend:
        if backend == "sqlite":
            store: StoreBackend = Store.open(tmp_path / "state")
        else:
            assert url is not None
            extra = {"clock": clock} if clock is not None else {}
            store = PostgresStore.open(url, tmp_path / "state", lease_s=LEASE_S, **extra, **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in reversed(opened):
        store.close()


@pytest.fixture
def store(open_store: Callable[..., StoreBackend]) -> StoreBackend:
    return open_store()
