"""Open the store a URL names: `sqlite:///PATH` (the embedded default) or `postgresql://…` (shared by replicas)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from controller.engine.store.base import StoreBackend
from controller.engine.store.schema import StoreError
from controller.engine.store.store import Store

SCHEMES = ("sqlite", "postgresql", "postgres")


def store_kind(url: str | None) -> str:
    """'sqlite' or 'postgresql' for a store URL (None: the state directory's SQLite file)."""
    if url is None:
        return "sqlite"
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise StoreError(f"unknown store URL scheme {scheme!r}: use sqlite:///PATH or postgresql://…")
    return "sqlite" if scheme == "sqlite" else "postgresql"


def open_store(url: str | None, state_dir: Path, *, pool_size: int = 10, lease_s: float = 60.0) -> StoreBackend:
    """Open the store `url` names; None or `sqlite://` without a path: `<state_dir>/trm-sre.db`."""
    kind = store_kind(url)
    if kind == "sqlite":
        path = urlsplit(url).path if url else ""
        return Store.open(state_dir, db_file=Path(path) if path and path != "/" else None)
    # Imported here: psycopg loads its C library, which the embedded default never needs.
    from controller.engine.store.postgres import PostgresStore

    assert url is not None
    return PostgresStore.open(url, state_dir, pool_size=pool_size, lease_s=lease_s)
