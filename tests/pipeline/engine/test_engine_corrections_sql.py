"""The corrections table (controller.engine.store.corrections_sql) on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.engine.approvals import correction_of
from controller.engine.store import StoreBackend
from controller.engine.store.backends import open_store
from controller.engine.store.corrections_sql import CorrectionRow, CorrectionSql, ensure_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    backend = open_store(url, tmp_path / "state")
    try:
        yield backend
    finally:
        backend.close()


def test_a_store_without_the_table_has_no_correction(store: StoreBackend) -> None:
    assert correction_of(store, "d1") is None


def test_the_first_correction_stands_and_reads_back_by_time(store: StoreBackend) -> None:
    ensure_schema(store)
    ensure_schema(store)  # idempotent
    first = CorrectionRow("d1", "a1", "pod-restart", {"name": "cart", "namespace": "shop"}, "alice", 100.0)
    none_right = CorrectionRow("d2", "a2", None, {}, "bob", 200.0)
    with store.transaction() as tx:
        assert CorrectionSql(tx).insert(first)
        assert CorrectionSql(tx).insert(none_right)
        assert not CorrectionSql(tx).insert(CorrectionRow("d1", "a1", None, {}, "mallory", 300.0))
    with store.reading() as tx:
        assert CorrectionSql(tx).correction("d1") == first
        assert [r.decision_id for r in CorrectionSql(tx).since(150.0)] == ["d2"]
        assert CorrectionSql(tx).since(0.0) == [first, none_right]
    assert correction_of(store, "d2") == {"function": None, "parameters": {}, "actor": "bob", "recorded_at": 200.0}


def test_retention_sweeps_old_corrections_and_skips_tables_a_store_lacks(store: StoreBackend) -> None:
    from controller.engine.store.ledger_sweep import sweep_finished_ledgers

    assert sweep_finished_ledgers(store, cutoff=1e12, limit=10) == {}  # no ledger table yet: nothing to do
    ensure_schema(store)
    with store.transaction() as tx:
        for i in range(3):
            CorrectionSql(tx).insert(CorrectionRow(f"d{i}", f"a{i}", None, {}, "alice", 100.0 * i))
    assert sweep_finished_ledgers(store, cutoff=150.0, limit=1) == {"corrections": 1}  # chunked
    assert sweep_finished_ledgers(store, cutoff=150.0, limit=10) == {"corrections": 1}
    with store.reading() as tx:
        assert [r.decision_id for r in CorrectionSql(tx).since(0.0)] == ["d2"]
