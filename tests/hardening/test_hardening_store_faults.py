"""The state store cannot write: 503 to Alertmanager, nothing acknowledged that is not stored, recovery after.

Faults, made without privileges so the tests run anywhere (CI runs as root or
not, and a tiny tmpfs needs a mount):
- **full**: `PRAGMA max_page_count` pinned to the current size — SQLite then
  fails every growing write with SQLITE_FULL, as on a full volume;
- **locked**: another connection holds an exclusive lock (another process,
  `sqlite3` by hand, a backup tool);
- **read-only**: `PRAGMA query_only` on the controller's own connection —
  SQLITE_READONLY, what a volume remounted read-only produces. (A chmod cannot
  stand in at run time: the open file descriptor keeps its write access.)
- at start-up: a state directory that cannot be created, and a database path
  that is not a file — a clear message and exit 1, never a traceback.

Every alert answered 200 is in the store; every 503 carries Retry-After and
stored nothing; after the fault clears, Alertmanager's retry of the same
payload is accepted and each incident is triggered exactly once. (Decisions
whose commit fails mid-fault are retried by the engine:
tests/pipeline/engine/test_engine_store_faults.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.engine.store import DB_FILENAME
from controller.schemas.decision import LAMBDA_TRIGGER
from tests.hardening.support import REPO, RULES_POLICY, StartServer, write_policy
from tests.pipeline.sink import CaptureSink

TOKEN = "store-fault-token"


def _payload(*pods: str, starts: str = "2026-05-01T10:00:00Z") -> dict[str, Any]:
    alerts = [
        {
            "status": "firing",
            "startsAt": starts,
            "annotations": {},
            "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": pod},
        }
        for pod in pods
    ]
    return {"version": "4", "status": "firing", "receiver": "trm-sre", "alerts": alerts}


def _pragma(server: Any, statement: str) -> None:
    """Run a PRAGMA on the controller's own connection, under the store's lock (as its writes are)."""
    store = server.components.store
    with store._lock:
        store._conn.execute(statement)


@contextlib.contextmanager
def full_disk(server: Any) -> Iterator[None]:
    """No page left: the file may not grow, and the free room inside its pages is filled with ballast."""
    store = server.components.store
    with store._lock:
        conn = store._conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 8}")
        conn.execute("CREATE TABLE hardening_ballast (b BLOB)")
        for size in (4096, 512, 64, 8, 1):
            for _ in range(10_000):
                try:
                    conn.execute("INSERT INTO hardening_ballast VALUES (randomblob(?))", (size,))
                except sqlite3.OperationalError as exc:
                    assert "full" in str(exc)
                    break
    try:
        yield
    finally:
        with store._lock:
            conn.execute("DROP TABLE hardening_ballast")
            conn.execute("PRAGMA max_page_count = 1073741823")


@contextlib.contextmanager
def read_only(server: Any) -> Iterator[None]:
    _pragma(server, "PRAGMA query_only = ON")
    try:
        yield
    finally:
        _pragma(server, "PRAGMA query_only = OFF")


@contextlib.contextmanager
def locked(server: Any) -> Iterator[None]:
    other = sqlite3.connect(server.components.settings.state_dir / DB_FILENAME, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


FAULTS = {"full": full_disk, "read-only": read_only, "locked": locked}


@pytest.fixture
async def server(controller: StartServer, sink: CaptureSink, tmp_path: Path) -> Any:
    return await controller(token=TOKEN, sink=sink.url, policies=[write_policy(tmp_path / "p", RULES_POLICY)])


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_store_fault_answers_503_acknowledges_nothing_and_recovers(
    server: Any, sink: CaptureSink, fault: str
) -> None:
    async with server.client() as http:
        before = await http.post("/alertmanager", json=_payload("cart-before"))
        assert before.status_code == 200
        await server.idle()
        stored_before = server.rows("alerts")
        batch = _payload(*(f"cart-{i}" for i in range(20)))
        with FAULTS[fault](server):
            refused = await http.post("/alertmanager", json=batch)
            # The CloudEvents route records through the same path. A single small alert may still fit in a
            # "full" database (a page with room left): then it is stored and acknowledged, never one without the other.
            event = await http.post(
                "/events",
                json=batch["alerts"][0],
                headers={
                    "ce-specversion": "1.0",
                    "ce-id": "fault-1",
                    "ce-source": "/prometheus",
                    "ce-type": "io.homelab.prometheus.alert.fired",
                    "content-type": "application/json",
                },
            )
            alive = await http.get("/healthz")
        assert refused.status_code == 503, refused.text
        assert event.status_code == 503 if fault != "full" else event.status_code in (202, 503)
        for response in (refused, event):
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) > 0
                assert response.json()["detail"] == "store unavailable; retry later"  # no SQLite internals
        assert alive.status_code == 200  # the process lives on
        acknowledged = 1 if event.status_code == 202 else 0
        assert server.rows("alerts") == stored_before + acknowledged  # nothing acknowledged unstored, nothing else

        retried = await http.post("/alertmanager", json=batch)  # Alertmanager's retry, once the fault cleared
    assert retried.status_code == 200
    assert retried.json()["new_incidents"] == 20 - acknowledged
    await server.idle(60)
    assert server.rows("alerts") == stored_before + 20  # a re-sent alert is counted on its incident, not stored twice
    triggers = sink.accepted_ids(LAMBDA_TRIGGER)
    assert len(triggers) == len(set(triggers)) == 21  # cart-0 was the CloudEvent too: one incident, one trigger


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("TRM_SRE_WEBHOOK_TOKEN", "K_SINK", "KUBECONFIG")}
    environ["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "controller", "run", "--standalone", "--no-model", "--port", "0", *args],
        cwd=REPO,
        env=environ,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_a_state_dir_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = _run("--state-dir", str(tmp_path / "a-file" / "state"))
    assert result.returncode == 1
    assert "cannot open the store in" in result.stderr and "Not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_path_that_is_not_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state" / DB_FILENAME).mkdir(parents=True)
    result = _run("--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1
    assert "cannot open the store in" in result.stderr
    assert "Traceback" not in result.stderr


# Not "locked": concurrent writers wait for SQLite's busy timeout (5 s) one after another, so 30 of them take
# minutes to be refused; one locked request is refused above.
@pytest.mark.parametrize("fault", ["full", "read-only"])
async def test_a_store_fault_never_turns_into_a_500_under_concurrency(server: Any, fault: str) -> None:
    async with server.client() as http:
        with FAULTS[fault](server):
            answers = await asyncio.gather(
                *(http.post("/alertmanager", json=_payload(f"cart-{i}", f"cart-{i}-b")) for i in range(30))
            )
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}
    assert 503 in statuses
    if fault != "full":
        assert set(statuses) == {503}
    assert server.rows("alerts") == 2 * statuses.count(200)  # every 200 stored in full, every 503 not at all
