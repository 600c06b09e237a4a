"""Fixtures shared by every test folder. Keep it small: folder-specific
fixtures belong in tests/<folder>/conftest.py.

The control plane is real (etcd + kube-apiserver built from source) and is
started once per session. If it cannot be built or started the fixture
errors: it never skips, so a broken toolchain cannot turn into a green run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests.envtest` must import the same way from every folder, whether or not
# tests/ is a package and however pytest was launched (`pytest` or `python -m`).
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.envtest.alertmanager import alertmanager_bin_dir as _alertmanager_bin_dir
from tests.envtest.controlplane import ControlPlane, start_control_plane
from tests.support.postgres import PostgresServer, PostgresUnavailable, start_postgres

# The kubernetes client reads KUBECONFIG once, when it is imported (and kopf
# logs in through it when installed). Point it, before any test module is
# imported, at a file that only the control_plane fixture writes, so no test
# can ever reach a developer's real cluster through ~/.kube/config.
SESSION_KUBECONFIG = Path(tempfile.mkdtemp(prefix="trm-sre-kubeconfig-")) / "config"
os.environ["KUBECONFIG"] = str(SESSION_KUBECONFIG)

# Fixtures whose users are marked `envtest` automatically, so
# `-m "not envtest"` selects the tests that need no built binaries.
_ENVTEST_FIXTURES = {"control_plane", "kubeconfig_env", "namespace", "alertmanager_bin_dir", "otelcol_dir"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "envtest: needs the real kube-apiserver + etcd (or Alertmanager) built by tests/envtest/build.sh"
    )
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_KUBECONFIG.parent, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _ENVTEST_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.envtest)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver for the whole session (admin and operator users).

    Its admin kubeconfig is also copied to $KUBECONFIG (see SESSION_KUBECONFIG).
    """
    cp = start_control_plane(tmp_path_factory.mktemp("control-plane"))
    shutil.copy(cp.kubeconfig, SESSION_KUBECONFIG)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def kubeconfig_env(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> ControlPlane:
    """KUBECONFIG points at the admin kubeconfig for this test (kopf, kubernetes client).

    The kubernetes client captured KUBECONFIG at import: pass
    `config_file=os.environ["KUBECONFIG"]` to it explicitly.
    """
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    return control_plane


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace per test.

    It is not deleted: with no kube-controller-manager a deleted namespace
    stays Terminating forever, and a unique name makes reuse unnecessary.
    """
    name = f"t-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="session")
def alertmanager_bin_dir() -> Path:
    """Directory with the real `alertmanager` and `amtool` (built on first use)."""
    return _alertmanager_bin_dir()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server per session (Debian's binaries); missing binaries fail, never skip."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped after the test."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)
