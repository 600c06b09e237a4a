"""Fixtures for the operator tests: the CRD installed once, a namespace's kubectl, a running operator.

The helpers behind them live in tests/operator/support.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.envtest.controlplane import ControlPlane
from tests.operator.support import (
    CRD_FILE,
    CRD_NAME,
    Kube,
    RunningOperator,
    start_operator,
    strip_finalizers,
)


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> str:
    """The RemediationPolicy CRD, applied with `kubectl apply -f crds/` and Established."""
    control_plane.kubectl("apply", "-f", str(CRD_FILE.parent))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return CRD_NAME


@pytest.fixture
def kube(control_plane: ControlPlane, crd: str, namespace: str) -> Iterator[Kube]:
    """kubectl (admin) in this test's namespace; the namespace's policies are removed afterwards."""
    yield Kube(control_plane, namespace)
    strip_finalizers(control_plane, namespace)


@pytest.fixture
def operator(control_plane: ControlPlane, kube: Kube, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningOperator]:
    """An operator (admin credentials) watching only this test's namespace."""
    op = start_operator(control_plane.kubeconfig, monkeypatch, namespaces=[kube.namespace])
    try:
        yield op
    finally:
        # Delete the policies while the operator still runs, so it releases its finalizers itself.
        res = control_plane.kubectl(
            "delete", "remediationpolicies", "--all", "-n", kube.namespace, "--timeout=30s", check=False
        )
        op.shutdown()
        if res.returncode != 0:
            strip_finalizers(control_plane, kube.namespace)
