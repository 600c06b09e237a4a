"""Real external processes for integration tests: kube-apiserver + etcd, Alertmanager.

See docs/testing.md. Stdlib only, no pytest import, so the same code serves
the pytest fixtures in tests/conftest.py and ad-hoc scripts
(`python -m tests.envtest.controlplane`).
"""

from .alertmanager import Alertmanager, alertmanager_bin_dir, start_alertmanager, webhook_config
from .controlplane import (
    ADMIN_USER,
    OPERATOR_USER,
    ControlPlane,
    EnvtestError,
    KubectlError,
    find_kube_binaries,
    start_control_plane,
)

__all__ = [
    "ADMIN_USER",
    "OPERATOR_USER",
    "Alertmanager",
    "ControlPlane",
    "EnvtestError",
    "KubectlError",
    "alertmanager_bin_dir",
    "find_kube_binaries",
    "start_alertmanager",
    "start_control_plane",
    "webhook_config",
]
