"""`--store URL`: which store a URL opens, and the settings that carry it."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engine.store import Store, StoreError, open_store, store_kind
from controller.engine.store.postgres import PostgresStore
from controller.settings import Settings, SettingsError


def test_no_url_or_sqlite_opens_the_sqlite_file(tmp_path: Path) -> None:
    default = open_store(None, tmp_path / "state")
    try:
        assert isinstance(default, Store) and not default.shared
        assert (tmp_path / "state" / "trm-sre.db").is_file()
    finally:
        default.close()
    elsewhere = open_store(f"sqlite://{tmp_path}/db/other.db", tmp_path / "state2")
    try:
        assert isinstance(elsewhere, Store)
        assert (tmp_path / "db" / "other.db").is_file()
        assert elsewhere.state_dir == tmp_path / "state2"  # the file sink's place is still the state directory
    finally:
        elsewhere.close()


def test_a_postgresql_url_opens_the_shared_store(postgres_url: str, tmp_path: Path) -> None:
    store = open_store(postgres_url, tmp_path, pool_size=2, lease_s=7)
    try:
        assert isinstance(store, PostgresStore) and store.shared and store.lease_s == 7
    finally:
        store.close()


def test_unknown_schemes_are_refused() -> None:
    assert store_kind(None) == "sqlite"
    assert store_kind("postgres://x/y") == store_kind("postgresql://x/y") == "postgresql"
    with pytest.raises(StoreError, match="unknown store URL scheme"):
        store_kind("mysql://x/y")


def test_the_store_url_setting(tmp_path: Path) -> None:
    assert Settings.load({}, environ={}).store_url is None
    env = {"TRM_SRE_STORE_URL": "postgresql://trm@db:5432/trm", "TRM_SRE_STORE_POOL_SIZE": "4"}
    settings = Settings.load({}, environ=env)
    assert (settings.store_url, settings.store_pool_size) == ("postgresql://trm@db:5432/trm", 4)
    assert (
        Settings.load({"store_url": f"sqlite://{tmp_path}/x.db"}, environ={}).store_url == f"sqlite://{tmp_path}/x.db"
    )
    for bad in ("mysql://db/x", "sqlite://relative.db", "postgresql://"):
        with pytest.raises(SettingsError):
            Settings.load({"store_url": bad}, environ={})
