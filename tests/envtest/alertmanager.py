"""A real Prometheus Alertmanager on loopback for end-to-end tests.

The pipeline's webhook receiver is tested against the payloads the real
Alertmanager sends (grouping, resolved notifications, bearer credentials from
a file), not hand-written JSON. The binaries come from build.sh (or from the
directory in TRM_SRE_ALERTMANAGER_BIN); process handling and the kill-on-exit
safety net are shared with controlplane.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .controlplane import EnvtestError, ManagedProcess, build_component, free_port, http_ok, wait_until

READY_TIMEOUT = 30.0


def alertmanager_bin_dir() -> Path:
    """Directory with `alertmanager` and `amtool`: $TRM_SRE_ALERTMANAGER_BIN or build.sh's."""
    override = os.environ.get("TRM_SRE_ALERTMANAGER_BIN")
    if override and (Path(override) / "alertmanager").is_file():
        return Path(override)
    return build_component("alertmanager")


def webhook_config(
    url: str,
    credentials_file: Path | str,
    *,
    receiver: str = "trm-sre",
    group_by: Sequence[str] = ("alertname",),
    group_wait: str = "1s",
    group_interval: str = "2s",
    repeat_interval: str = "1h",
) -> str:
    """An Alertmanager config that routes everything to one webhook receiver.

    The timings are short so a test sees the first notification about
    `group_wait` after posting and a resolved one about `group_interval` later.
    JSON is valid YAML, so no YAML library is needed.
    """
    config = {
        "route": {
            "receiver": receiver,
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": receiver,
                "webhook_configs": [
                    {
                        "url": url,
                        "send_resolved": True,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": str(credentials_file)},
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


@dataclass
class Alertmanager:
    url: str  # http://127.0.0.1:PORT
    workdir: Path
    bin_dir: Path
    config_file: Path
    _proc: ManagedProcess = field(repr=False)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def amtool(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run amtool against this Alertmanager, e.g. amtool("alert", "add", "alertname=X")."""
        cmd = [str(self.bin_dir / "amtool"), f"--alertmanager.url={self.url}", *args]
        res = subprocess.run(
            cmd, check=False, text=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if check and res.returncode != 0:
            raise EnvtestError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST /api/v2/alerts, as Prometheus does (labels, annotations, startsAt, endsAt...)."""
        req = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # raises HTTPError on 4xx/5xx
            resp.read()

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: what Alertmanager currently holds."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as resp:
            data: list[dict[str, Any]] = json.load(resp)
        return data

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.log_tail(lines)

    def stop(self) -> None:
        """Kill Alertmanager and its process group. Idempotent."""
        self._proc.stop()


def start_alertmanager(
    config_yaml: str,
    workdir: Path,
    *,
    bin_dir: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> Alertmanager:
    """Write the config into `workdir`, start Alertmanager on a free port, wait for /-/ready."""
    bin_dir = bin_dir or alertmanager_bin_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(config_yaml)
    for attempt in range(3):  # free_port() can race; retry on a clash
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = ManagedProcess(
            "alertmanager", _args(bin_dir, config_file, workdir, url, port), workdir / "alertmanager.log"
        )
        try:
            proc.start()
            ready = f"{url}/-/ready"
            wait_until(f"alertmanager {ready}", lambda ready=ready: http_ok(ready), [proc], timeout)
            return Alertmanager(url=url, workdir=workdir, bin_dir=bin_dir, config_file=config_file, _proc=proc)
        except BaseException as exc:
            proc.stop()
            clash = isinstance(exc, EnvtestError) and "address already in use" in proc.log_tail(80)
            if not clash or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _args(bin_dir: Path, config_file: Path, workdir: Path, url: str, port: int) -> list[str]:
    return [
        str(bin_dir / "alertmanager"),
        f"--config.file={config_file}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",  # stable externalURL in payloads, no hostname lookup
        "--cluster.listen-address=",  # empty: no HA gossip, no extra ports
    ]
