"""Child processes of the benchmark: the controller under test, and a way to run a bench module.

Every child gets its own session (so a stop reaches all of it) and is killed
at exit if it is still there; the harness never leaves a controller behind.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The controller's announce line, and the floor receiver's (bench/floor.py).
_LISTENING = re.compile(r"(?:trm-sre|bench floor) listening on (http://[0-9.]+:[0-9]+)")
_children: dict[int, subprocess.Popen[bytes]] = {}


def _kill_children() -> None:
    for pid, popen in list(_children.items()):
        if popen.poll() is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


atexit.register(_kill_children)


def child_env(**extra: str | None) -> dict[str, str]:
    """This environment minus anything that would change the controller's behaviour, plus `extra`."""
    drop = ("TRM_SRE_WEBHOOK_TOKEN", "K_SINK", "K_CE_OVERRIDES", "KUBECONFIG")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[popen.pid] = popen
    return popen


def stop(popen: subprocess.Popen[bytes], timeout: float = 40.0) -> int:
    """SIGTERM to the child's group, then SIGKILL if it does not exit in time."""
    if popen.poll() is None:
        try:
            os.killpg(popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(10)
    _children.pop(popen.pid, None)
    return popen.returncode


def controller_argv(
    state_dir: Path,
    *,
    policies: Path | None,
    model: bool,
    port: int = 0,
    log_level: str = "INFO",
    standalone: bool = True,
    extra: list[str] | None = None,
) -> list[str]:
    argv = ["run", "--port", str(port), "--state-dir", str(state_dir), "--log-level", log_level]
    if standalone:
        argv.append("--standalone")
    if policies is not None:
        argv += ["--policies", str(policies)]
    if not model:
        argv.append("--no-model")
    return argv + list(extra or [])


@dataclass
class ControllerProcess:
    """`python -m controller <argv>` (or a wrapper module that runs the CLI, for profiling)."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    module: str = "controller"
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    url: str = ""
    started_at: float = 0.0

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def webhook_url(self) -> str:
        """Where Alertmanager's webhooks go."""
        return f"{self.url}/alertmanager"

    def start(self, timeout: float = 180.0) -> str:
        """Start and return the URL once it listens (the announce line); raises with the log tail on failure."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.started_at = time.monotonic()
        self.popen = spawn([sys.executable, "-m", self.module, *self.argv], self.env, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_bytes()[offset:].decode(errors="replace"))
            if match:
                self.url = match.group(1)
                return self.url
            if self.popen.poll() is not None:
                raise RuntimeError(f"the controller exited with {self.popen.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"the controller did not listen within {timeout:.0f} s:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll /readyz until 200; seconds since start()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, _ = http_get(f"{self.url}/readyz", timeout=2)
                if status == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"the controller exited while starting:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"the controller was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """Sums of a few counters from /metrics (the controller's own account, to cross-check the sink's)."""
        status, body = http_get(f"{self.url}/metrics", timeout=10)
        if status != 200:
            return {}
        sums: dict[str, float] = {}
        wanted = {
            'agent_sre_triggers_total{result="sent"}': "triggers_sent",
            "agent_sre_alerts_received_total": "alerts_received",
            'agent_sre_triggers_total{result="dead_lettered"}': "triggers_dead_lettered",
        }
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("#") or " " not in line:
                continue
            sample, _, value = line.rpartition(" ")
            for prefix, key in wanted.items():
                if sample == prefix or (sample.startswith(prefix + "{") and "{" not in prefix):
                    sums[key] = sums.get(key, 0.0) + float(value)
        return sums

    def stop(self, timeout: float = 40.0) -> int:
        return stop(self.popen, timeout) if self.popen is not None else 0

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


def run_module(
    module: str, args: list[str], log_path: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` to completion (stdout returned, stderr to the log)."""
    with open(log_path, "a") as log:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env or child_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
