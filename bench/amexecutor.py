"""The peer of the side-by-side benchmark: prometheus-am-executor running `curl` to the sink per alert.

prometheus-am-executor (github.com/imgix/prometheus-am-executor, Go) is what
a user might pick instead of trm-sre: it receives Alertmanager webhooks and
runs a command per webhook with the alert in environment variables
(`AMX_ALERT_<n>_FINGERPRINT`, `AMX_ALERT_<n>_LABEL_<name>`, ...). Here the
command posts one binary-mode CloudEvent to the same capture sink as
trm-sre's trigger, with the alert's fingerprint in `data.alert`, so the sink
matches it to the POST the same way. The load is one alert per webhook, so
one command per alert. It answers the webhook after the command exits (500
when it fails); it has no queue, no admission limit (`max` unset) and no
store: an alert is as durable as the command's run.

The binary comes from `bench/peer/build.sh` (cached in ~/.cache/trm-sre/bin);
when it cannot be built, `binary()` says why and the bench reports that.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import REPO, child_env, http_get, spawn, stop

BUILD_SH = REPO / "bench" / "peer" / "build.sh"
TRIGGER = "io.homelab.agent-sre.lambda.trigger"


def binary() -> tuple[Path | None, str]:
    """(the prometheus-am-executor binary, "") or (None, why it is not there)."""
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SH)], capture_output=True, text=True, timeout=900, check=False, cwd=REPO
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bench/peer/build.sh could not run: {exc}"
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        return None, f"bench/peer/build.sh failed ({done.returncode}): {tail[-400:]}"
    path = Path(done.stdout.strip().splitlines()[-1]) / "prometheus-am-executor"
    return (path, "") if path.is_file() else (None, f"bench/peer/build.sh built nothing at {path}")


def sink_command(sink: str) -> tuple[str, list[str], str]:
    """(cmd, args, what it is): post one CloudEvent per alert to `sink`; curl, else a tiny Python client."""
    body = '{"alert":{"fingerprint":"\'"$AMX_ALERT_1_FINGERPRINT"\'","status":"\'"$AMX_ALERT_1_STATUS"\'"}}'
    headers = {
        "ce-specversion": "1.0",
        "ce-type": TRIGGER,
        "ce-source": "/bench/am-executor",
        "content-type": "application/json",
    }
    curl = shutil.which("curl")
    if curl:
        flags = " ".join(f"-H {shlex.quote(f'{k}: {v}')}" for k, v in headers.items())
        script = (
            f"exec {curl} -sS --fail -o /dev/null --max-time 5 -X POST {flags} "
            f"-H \"ce-id: $AMX_ALERT_1_FINGERPRINT\" --data-binary '{body}' {shlex.quote(sink)}"
        )
        return "/bin/sh", ["-c", script], f"`curl` ({curl}) from `/bin/sh -c`, one process pair per alert"
    client = (
        "import os, json, urllib.request as u; fp = os.environ['AMX_ALERT_1_FINGERPRINT']; "
        f"h = {json.dumps(headers)}; h['ce-id'] = fp; "
        "d = json.dumps({'alert': {'fingerprint': fp}}).encode(); "
        f"u.urlopen(u.Request({sink!r}, data=d, headers=h, method='POST'), timeout=5).read()"
    )
    return sys.executable, ["-S", "-c", client], "no curl here: a minimal Python urllib client per alert"


@dataclass
class AmExecutorProcess:
    """prometheus-am-executor on loopback with a config whose one command posts each alert to the sink."""

    binary: Path
    sink: str
    workdir: Path
    port: int
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0
    command: str = ""

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/"

    def start(self) -> None:
        cmd, args, self.command = sink_command(self.sink)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "executor.yml"
        # JSON is YAML: no quoting rules of our own for the shell script in `args`.
        config.write_text(
            json.dumps(
                {
                    "listen_address": f"127.0.0.1:{self.port}",
                    "verbose": False,
                    "commands": [{"cmd": cmd, "args": args, "notify_on_failure": True}],
                },
                indent=1,
            )
        )
        self.started_at = time.monotonic()
        self.popen = spawn([str(self.binary), "-f", str(config)], child_env(), self.workdir / "am-executor.log")

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Poll /_health until 200; seconds since start()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if http_get(f"{self.url}/_health", timeout=1)[0] == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"prometheus-am-executor exited with {self.popen.returncode}: {self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"prometheus-am-executor was not healthy within {timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> int:
        return stop(self.popen, 15) if self.popen is not None else 0

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.workdir / "am-executor.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"
