"""Run `python -m controller run ...` as a real child process for end-to-end tests.

The child gets its own process group (so SIGTERM/SIGKILL reach all of it),
the Linux parent-death signal when `setpriv` exists (so a killed pytest leaves
nothing behind), and an atexit hook. Its stdout+stderr go to a log file; the
URL is read from the line it prints once it listens (`--port 0`: no races on
ports).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.envtest.alertmanager import webhook_config
from tests.envtest.controlplane import free_port
from tests.support.alerts import fixture_payload

REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"trm-sre listening on (http://[0-9.]+:[0-9]+)")
_children: set[subprocess.Popen[bytes]] = set()


def _kill_children() -> None:
    for popen in list(_children):
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


atexit.register(_kill_children)


def child_env(**extra: str | None) -> dict[str, str]:
    """The test's environment without settings that would leak into the child, plus `extra` (None removes)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRM_SRE_WEBHOOK_TOKEN", "K_SINK", "K_CE_OVERRIDES", "KUBECONFIG")
    }
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@dataclass
class ControllerProcess:
    """One `trm-sre run` child. `start()` returns its URL once it listens."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    url: str = ""

    def start(self, timeout: float = 180) -> str:
        setpriv = shutil.which("setpriv")
        prefix = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [*prefix, sys.executable, "-m", "controller", "run", *self.args],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _children.add(self.popen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_bytes()[offset:].decode(errors="replace"))
            if match:
                self.url = match.group(1)
                return self.url
            if self.popen.poll() is not None:
                raise RuntimeError(f"trm-sre exited with {self.popen.returncode}:\n{self.log_tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"trm-sre did not listen within {timeout:.0f} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        os.killpg(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        if self.popen is not None:
            self.signal(signal.SIGKILL)
            self.popen.wait(30)
            _children.discard(self.popen)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM and wait for a graceful exit; SIGKILL if it does not come. Returns the exit code."""
        if self.popen is None:
            return 0
        try:
            self.signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        _children.discard(self.popen)
        return code

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def cluster_controller(kubeconfig: Path, sink_url: str, token: str, tmp_path: Path) -> ControllerProcess:
    """`trm-sre run` in cluster mode (cluster-wide, as deployed), no model, as the user of `kubeconfig`.

    Triggers go to `sink_url`; the webhook token is `token`; state and log under `tmp_path`. Not started.
    """
    return ControllerProcess(
        ["--port", "0", "--no-model", "--state-dir", str(tmp_path / "state"), "--liveness-port", "0"],
        child_env(KUBECONFIG=str(kubeconfig), K_SINK=sink_url, TRM_SRE_WEBHOOK_TOKEN=token),
        tmp_path / "trm-sre.log",
    )


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 15) -> tuple[int, Any]:
    """A curl-equivalent request: (status, parsed JSON body or text); connection errors raise OSError."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(
    what: str, check: Any, timeout: float, proc: ControllerProcess | None = None, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and not proc.alive():
            raise AssertionError(f"trm-sre exited while waiting for {what}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"\n{proc.log_tail()}" if proc is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(interval)


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics_text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == want:
            return float(value)
    return 0.0


LARGE_BUDGET_POLICY = """\
# Every crash-looping pod restarted, with a storm-breaker budget large enough for load tests.
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: crashloops, namespace: shop}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
  actions: {cooldownSeconds: 300, maxTriggersPerWindow: 100000, windowSeconds: 600}
"""


def slow_first_stage_policy(llm_url: str) -> str:
    """LARGE_BUDGET_POLICY behind a functionCalling stage at `llm_url`: each decision waits for that server."""
    stage = f'    - functionCalling: {{endpoint: "{llm_url}", api: ollama, model: slow, timeoutMs: 5000}}\n'
    return LARGE_BUDGET_POLICY.replace("  chain:\n", "  chain:\n" + stage)


def crashloop_payload(pod: str, starts_at: str = "2026-05-01T10:04:30Z") -> dict[str, Any]:
    """crashloop.json for another pod: a new label set, so a new fingerprint and incident."""
    payload = fixture_payload("crashloop.json")
    for alert in payload["alerts"]:
        alert["labels"]["pod"] = pod
        alert["fingerprint"] = ""  # Alertmanager's would differ too; trm-sre computes the same one
        alert["startsAt"] = starts_at
    payload["commonLabels"]["pod"] = pod
    return payload


def crashloop_restart_policy(name: str, namespace: str, actions: str) -> str:
    """A policy restarting crash-looping pods of one namespace, with the given `actions` (inline YAML)."""
    return f"""\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  match: {{alertNames: [KubePodCrashLooping], matchers: [{{label: namespace, value: {namespace}}}]}}
  targetNamespaces: [{namespace}]
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {{name: "{{{{ $labels.pod }}}}", namespace: "{{{{ $labels.namespace }}}}", type: pod}}
  actions: {actions}
"""


def now_rfc3339() -> str:
    """Now, as Alertmanager's API takes startsAt / endsAt."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def crashloop_alert(
    namespace: str, pod: str, starts_at: str, ends_at: str | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A KubePodCrashLooping alert as posted to Alertmanager's API (an `ends_at` resolves it)."""
    body: dict[str, Any] = {
        "labels": {"alertname": "KubePodCrashLooping", "namespace": namespace, "pod": pod, "severity": "warning"},
        "annotations": {"summary": f"{pod} is crash looping", **(annotations or {})},
        "startsAt": starts_at,
        "generatorURL": "http://prometheus:9090/graph",
    }
    if ends_at:
        body["endsAt"] = ends_at
    return body


def judging_controller(tmp_path: Path, sink_url: str, token_file: Path, policies: dict[str, str]) -> ControllerProcess:
    """A standalone trm-sre (not started) judging outcomes every 0.5 s, with `policies` (file stem -> YAML).

    Its port is fixed, so Alertmanager keeps notifying the same URL across a restart.
    """
    files = []
    for stem, text in policies.items():
        path = tmp_path / f"{stem}.yaml"
        path.write_text(text)
        files.append(str(path))
    return ControllerProcess(
        [
            "--standalone",
            "--port",
            str(free_port()),
            "--no-model",
            "--state-dir",
            str(tmp_path / "state"),
            "--token-file",
            str(token_file),
            "--policies",
            *files,
        ],
        child_env(K_SINK=sink_url, TRM_SRE_ENGINE__OUTCOME_INTERVAL_S="0.5"),
        tmp_path / "trm-sre.log",
    )


def per_pod_webhook_config(url: str, token_file: Path) -> str:
    """Alertmanager notifying `url` once per (namespace, pod) group within a second; resolutions sent."""
    return webhook_config(
        url, token_file, group_by=("namespace", "pod"), group_wait="1s", group_interval="1s", repeat_interval="1h"
    )
