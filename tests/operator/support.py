"""Helpers for the operator tests: kubectl in a namespace, polling, an operator running in a thread.

The operator runs exactly as in the app (`run_operator` in its own event
loop), in a background thread of the test process, so a test can look into its
`PolicyIndex` and feed its `PolicyStatusRecorder` directly while the real
apiserver sees what it writes. Tests poll for the expected state; they never
sleep a fixed time or assert on durations.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.decision.policy_index import PolicyIndex
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.operator.handlers import build_registry, run_operator
from runbooks import default_catalog
from tests.envtest.controlplane import ControlPlane, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "remediationpolicy.yaml"
SAMPLES_DIR = REPO_ROOT / "deploy" / "samples"
CRD_NAME = "remediationpolicies.remediation.homelab.io"
API_VERSION = "remediation.homelab.io/v1alpha1"
#: Generous: the machine is shared with builds and training; tests poll, so a fast run stays fast.
WAIT_S = 60.0


class _RenderedLoader(yaml.SafeLoader):
    """PyYAML (YAML 1.1) reads a bare `=` as the obsolete "value" tag; kustomize (YAML 1.2) writes it bare."""


_RenderedLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def load_rendered(text: str) -> list[dict[str, Any]]:
    """The objects in `kubectl kustomize` output."""
    return [doc for doc in yaml.load_all(text, Loader=_RenderedLoader) if doc]


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy (returned); fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def policy_manifest(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": API_VERSION, "kind": "RemediationPolicy", "metadata": {"name": name}, "spec": spec}
    )


def simple_spec(**overrides: Any) -> dict[str, Any]:
    """A small valid spec; keyword arguments replace top-level fields."""
    spec: dict[str, Any] = {
        "match": {"alertNames": ["KubePodCrashLooping"]},
        "allowedFunctions": ["pod-restart"],
        "chain": [
            {"trm": {"minConfidence": 0.8}},
            {"rules": [{"function": "pod-restart", "parameters": {"name": "{{ $labels.pod }}", "type": "pod"}}]},
        ],
    }
    spec.update(overrides)
    return spec


@dataclass
class Kube:
    """kubectl against the test control plane, in one namespace, with JSON results."""

    cp: ControlPlane
    namespace: str
    kubeconfig: Path | None = None

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, input=input, check=check, kubeconfig=self.kubeconfig)

    def apply(self, manifest: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-n", self.namespace, "-f", "-", *extra, input=manifest, check=check)

    def get_policy(self, name: str) -> dict[str, Any] | None:
        res = self.run("get", "remediationpolicy", name, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def policy_status(self, name: str) -> dict[str, Any]:
        return (self.get_policy(name) or {}).get("status") or {}

    def ready(self, name: str) -> dict[str, Any] | None:
        for condition in self.policy_status(name).get("conditions") or ():
            if condition.get("type") == "Ready":
                return condition
        return None

    def events(self, name: str) -> list[dict[str, Any]]:
        res = self.run(
            "get",
            "events",
            "-n",
            self.namespace,
            "-o",
            "json",
            "--field-selector",
            f"involvedObject.name={name},involvedObject.kind=RemediationPolicy",
        )
        return json.loads(res.stdout)["items"]

    def patch_spec(self, name: str, patch: dict[str, Any]) -> None:
        self.run(
            "patch", "remediationpolicy", name, "-n", self.namespace, "--type=merge", "-p", json.dumps({"spec": patch})
        )

    def delete_policy(self, name: str, wait: bool = False) -> None:
        self.run(
            "delete", "remediationpolicy", name, "-n", self.namespace, f"--wait={str(wait).lower()}", "--timeout=60s"
        )


def strip_finalizers(cp: ControlPlane, namespace: str | None) -> None:
    """Delete every policy in `namespace` (None: all namespaces), removing finalizers nobody will remove now."""
    scope = ["-A"] if namespace is None else ["-n", namespace]
    res = cp.kubectl("get", "remediationpolicies", *scope, "-o", "json", check=False)
    if res.returncode != 0:
        return
    for item in json.loads(res.stdout)["items"]:
        meta = item["metadata"]
        if meta.get("finalizers"):
            cp.kubectl(
                "patch",
                "remediationpolicy",
                meta["name"],
                "-n",
                meta["namespace"],
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        cp.kubectl("delete", "remediationpolicy", meta["name"], "-n", meta["namespace"], "--wait=false", check=False)


@dataclass
class RunningOperator:
    """An operator running `run_operator` in a background thread with its own event loop."""

    index: PolicyIndex
    recorder: PolicyStatusRecorder
    liveness_url: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def probe(self) -> dict[str, Any] | None:
        """The liveness endpoint's JSON (kopf's probe results), or None while it is not serving."""
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=5) as resp:
                return json.loads(resp.read()) if resp.status == 200 else None
        except OSError:
            return None

    def shutdown(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
            assert not self.thread.is_alive(), "the operator did not stop within 60 s of its stop flag"
        if self.error is not None:
            raise AssertionError(f"the operator crashed: {self.error!r}") from self.error


def start_operator(
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    namespaces: list[str] | None,
    recorder: PolicyStatusRecorder | None = None,
    index: PolicyIndex | None = None,
    reset_circuit: Any = None,
) -> RunningOperator:
    """Start an operator with `kubeconfig` (kopf logs in through the kubernetes client, which reads KUBECONFIG)."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    op = RunningOperator(
        index=index if index is not None else PolicyIndex(),  # an empty index is falsy
        recorder=recorder or PolicyStatusRecorder(),
        liveness_url=f"http://127.0.0.1:{free_port()}/healthz",
    )
    registry = build_registry(
        op.index, op.recorder, default_catalog(), status_flush_seconds=1.0, reset_circuit=reset_circuit
    )

    def settings_hook(settings: Any) -> None:
        # Short watch requests: a test that restarts the apiserver sees the reconnect sooner.
        settings.watching.server_timeout = 30
        settings.watching.client_timeout = 40
        settings.watching.connect_timeout = 5
        settings.networking.error_backoffs = (0.5, 1, 2, 3)

    def main() -> None:
        try:
            asyncio.run(
                run_operator(
                    registry,
                    namespaces=namespaces,
                    stop_flag=op.stop,  # type: ignore[arg-type]  # kopf takes threading.Event too
                    liveness_endpoint=op.liveness_url,
                    settings_hook=settings_hook,
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported by shutdown(): a crash must fail the test, not vanish with the thread
            op.error = exc

    op.thread = threading.Thread(target=main, name="kopf-operator", daemon=True)
    op.thread.start()
    return op
