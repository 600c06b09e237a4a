"""The test control plane itself: reachable, RBAC enforced, restartable, leak-free."""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.envtest.controlplane import OPERATOR_USER, ControlPlane, start_control_plane

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def private_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own.

    The shared session one may already carry RBAC that other test folders
    applied, and restarting it would disturb them.
    """
    cp = start_control_plane(tmp_path_factory.mktemp("private-control-plane"))
    try:
        yield cp
    finally:
        cp.stop()


def _get(cp: ControlPlane, path: str, token: str) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(cp.ca_file))
    req = urllib.request.Request(f"{cp.server}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return resp.status, resp.read().decode()


def test_readyz_answers_over_verified_tls(control_plane: ControlPlane) -> None:
    status, body = _get(control_plane, "/readyz", control_plane.admin_token)
    assert (status, body) == (200, "ok")


def test_admin_kubeconfig_creates_a_namespace(control_plane: ControlPlane) -> None:
    name = f"cp-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", name)
    ns = json.loads(control_plane.kubectl("get", "namespace", name, "-o", "json").stdout)
    assert ns["status"]["phase"] == "Active"


def test_kubeconfig_env_works_with_the_python_client(kubeconfig_env: ControlPlane, namespace: str) -> None:
    # The operator and the pipeline use the kubernetes client (and kopf), which
    # must accept our kubeconfig: inlined CA, static bearer token.
    # new_client_from_config leaves the client's global default alone.
    from kubernetes import client, config

    admin = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    assert client.CoreV1Api(admin).read_namespace(namespace).status.phase == "Active"

    operator = config.new_client_from_config(config_file=str(kubeconfig_env.operator_kubeconfig))
    with pytest.raises(client.ApiException) as denied:
        client.CoreV1Api(operator).read_namespace(namespace)
    assert denied.value.status == 403


def test_session_kubeconfig_is_the_control_plane(control_plane: ControlPlane) -> None:
    # Set at conftest import, before any test module imported `kubernetes`.
    from kubernetes.config import KUBE_CONFIG_DEFAULT_LOCATION

    assert Path(KUBE_CONFIG_DEFAULT_LOCATION).read_text() == control_plane.kubeconfig.read_text()


def test_kubectl_is_within_supported_skew_of_the_apiserver(control_plane: ControlPlane) -> None:
    # A system kubectl can be many minors older (Debian's is 1.20); kubectl
    # supports one minor of skew, and the one built from source has none.
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    client, server = versions["clientVersion"], versions["serverVersion"]
    assert client["major"] == server["major"] == "1"
    assert abs(int(client["minor"]) - int(server["minor"])) <= 1


def test_operator_user_is_authenticated_but_forbidden_without_rbac(private_control_plane: ControlPlane) -> None:
    cp = private_control_plane
    who = json.loads(cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=cp.operator_kubeconfig).stdout)
    assert who["status"]["userInfo"]["username"] == OPERATOR_USER
    assert who["status"]["userInfo"]["groups"] == ["system:authenticated"]

    denied = cp.kubectl("get", "pods", "-n", "default", kubeconfig=cp.operator_kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f'User "{OPERATOR_USER}" cannot list resource "pods"' in denied.stderr


def test_restart_apiserver_keeps_port_and_data(private_control_plane: ControlPlane) -> None:
    cp = private_control_plane
    name = f"restart-{secrets.token_hex(4)}"
    cp.kubectl("create", "configmap", name, "-n", "default", "--from-literal=k=v")
    old_pid = cp.apiserver_pid

    cp.restart_apiserver()

    assert cp.apiserver_pid != old_pid
    assert cp.ready()
    data = json.loads(cp.kubectl("get", "configmap", name, "-n", "default", "-o", "json").stdout)["data"]
    assert data == {"k": "v"}  # same etcd, so state survives the restart


def test_stop_is_idempotent(tmp_path: Path) -> None:
    cp = start_control_plane(tmp_path / "cp")
    pids = (cp.etcd_pid, cp.apiserver_pid)
    cp.stop()
    cp.stop()
    assert not any(_group_members(pid) for pid in pids)


# --------------------------------------------------------------------------
# Killing the Python process that owns a control plane leaves nothing behind
# --------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, signal, sys, time
    from pathlib import Path
    from tests.envtest.controlplane import start_control_plane
    # Dispositions as in an interactive pytest, whatever this child inherited
    # (a background job in a non-interactive shell starts with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cp = start_control_plane(Path(sys.argv[1]))
    print(json.dumps({"etcd": cp.etcd_pid, "apiserver": cp.apiserver_pid}), flush=True)
    time.sleep(600)
    """
)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) PIDs whose process group is `pgid`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command name: state ppid pgrp ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _wait_gone(pgids: tuple[int, ...], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pgid in pgids for pid in _group_members(pgid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signalled_owner_leaves_no_etcd_or_apiserver(tmp_path: Path, signum: signal.Signals) -> None:
    log = (tmp_path / "child.log").open("w")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "cp")],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until the control plane is ready
        assert line, f"child exited early:\n{(tmp_path / 'child.log').read_text()}"
        pids = json.loads(line)
        assert all(_group_members(pid) for pid in pids.values()), "children should be running"

        child.send_signal(signum)
        child.wait(timeout=30)

        assert _wait_gone(tuple(pids.values()), timeout=15) == []
    finally:
        child.kill()
        child.wait()
        log.close()
