"""Fixtures of the hardening tests: a capture sink, in-process controllers that are always stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hardening.support import RunningServer, StartServer, start_server
from tests.pipeline.sink import CaptureSink
from tests.support.controllers import server_settings


@pytest.fixture
def sink() -> Iterator[CaptureSink]:
    with CaptureSink() as capture:
        yield capture


@pytest.fixture
async def controller(tmp_path: Path, sink: CaptureSink) -> AsyncIterator[StartServer]:
    """`await controller(token=..., sink=..., limits=..., policies=[...], model=..., **Settings fields)`.

    Depends on `sink` so the sink outlives the controllers: stopping one gives its outbox a last
    delivery pass, which against a sink already gone would only wait out the retries.
    """
    running: list[RunningServer] = []

    async def start(*, model: Any = None, scheme: str = "http", **kwargs: Any) -> RunningServer:
        settings = server_settings(tmp_path / f"server{len(running)}" / "state", **kwargs)
        server = await start_server(settings, model=model, scheme=scheme)
        running.append(server)
        return server

    yield start
    for server in running:
        if not server.task.done():
            await server.stop()


@pytest.fixture(scope="session")
def audited_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private etcd + kube-apiserver with a Metadata-level audit log (its own, so it can also be restarted).

    The CRD and deploy/base's RBAC are installed; the ClusterRole and the
    secret reader are bound to the test's unprivileged `trm-sre-operator` user,
    which stands in for the ServiceAccount (no token controller runs here).
    """
    from tests.envtest.controlplane import METADATA_AUDIT_POLICY, start_control_plane
    from tests.hardening.cluster import install_controller_rbac

    cp = start_control_plane(tmp_path_factory.mktemp("audited-control-plane"), audit_policy=METADATA_AUDIT_POLICY)
    try:
        install_controller_rbac(cp)
        yield cp
    finally:
        cp.stop()
