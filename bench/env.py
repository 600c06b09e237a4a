"""What the numbers were measured on, and what a process costs (RSS, CPU) read from /proc.

psutil is not a dependency of trm-sre, so process statistics come straight
from /proc (Linux only; elsewhere they are reported as unavailable).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        out = ""
    match = re.search(r"^Model name:\s*(.+)$", out, re.MULTILINE)
    if match:
        return match.group(1).strip()
    return platform.processor() or "unknown"


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _kube_version() -> str:
    """The test control plane's Kubernetes version (tests/envtest/versions.env), and the binary's if built."""
    declared = None
    env_file = REPO / "tests" / "envtest" / "versions.env"
    if env_file.is_file():
        match = re.search(r"^K8S_VERSION=(\S+)", env_file.read_text(), re.MULTILINE)
        declared = match.group(1) if match else None
    return declared or "unknown"


def _git() -> dict[str, Any]:
    git = shutil.which("git")
    if git is None:
        return {}
    try:
        head = subprocess.run(
            [git, "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                [git, "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        )
    except OSError:
        return {}
    return {"commit": head, "dirty": dirty}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """Hardware, versions and load: the context every number in the report needs."""
    import torch  # the version is part of the context; imported only here

    return {
        "hardware": {
            "cpu_model": _lscpu_model(),
            "cores": os.cpu_count(),
            "ram_gb": _mem_total_gb(),
            "machine": platform.machine(),
            "kernel": platform.release(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads_default": torch.get_num_threads(),
            "kube": _kube_version(),
            "trm_sre": _version("trm-sre") or _repo_version(),
            "fastapi": _version("fastapi"),
            "uvicorn": _version("uvicorn"),
            "pydantic": _version("pydantic"),
            "kopf": _version("kopf"),
            "httpx": _version("httpx"),
            "aiohttp": _version("aiohttp"),
        },
        "git": _git(),
        "load_average_at_start": load_average(),
    }


def _repo_version() -> str:
    from controller import __version__

    return __version__


# --------------------------------------------------------------------------
# /proc readings
# --------------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """Resident set size of `pid` in MiB (VmRSS), None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    """user + system CPU seconds of a process (or of one of its threads)."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after its closing parenthesis are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def children_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of the children `pid` has waited for (a peer's commands, say)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[13]) + int(fields[14])) / _CLK_TCK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of `pid`."""
    out: dict[int, float] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return out
    for tid in tids:
        value = cpu_seconds(pid, tid)
        if value is not None:
            out[tid] = value
    return out


@dataclass
class ProcessSampler:
    """Samples RSS and CPU of one process in a background thread while a phase runs.

    CPU is reported as a share of one core over the window (100% = one core
    busy; this machine has two), split into the main thread (the asyncio
    event loop: HTTP, routing, the pipeline's coroutines) and every other
    thread (asyncio.to_thread workers: SQLite, the model; torch's own pool).
    """

    pid: int
    interval_s: float = 0.25
    rss: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _start_cpu: float | None = None
    _start_children: float | None = None
    _start_threads: dict[int, float] = field(default_factory=dict)
    _start_wall: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> Self:
        self._start_wall = time.monotonic()
        self._start_cpu = cpu_seconds(self.pid)
        self._start_children = children_cpu_seconds(self.pid)
        self._start_threads = thread_cpu(self.pid)
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.rss.append(value)
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        wall = time.monotonic() - self._start_wall
        end_cpu = cpu_seconds(self.pid)
        end_threads = thread_cpu(self.pid)
        main = end_threads.get(self.pid, 0.0) - self._start_threads.get(self.pid, 0.0)
        others = sum(v - self._start_threads.get(t, 0.0) for t, v in end_threads.items() if t != self.pid)
        total = (end_cpu - self._start_cpu) if end_cpu is not None and self._start_cpu is not None else None
        end_children = children_cpu_seconds(self.pid)
        children = (
            end_children - self._start_children
            if end_children is not None and self._start_children is not None
            else None
        )
        self.result = {
            "window_s": round(wall, 2),
            "rss_mb_max": round(max(self.rss), 1) if self.rss else None,
            "rss_mb_end": round(self.rss[-1], 1) if self.rss else None,
            "cpu_percent_of_one_core": round(100 * total / wall, 1) if total is not None and wall > 0 else None,
            "cpu_main_thread_percent": round(100 * main / wall, 1) if wall > 0 else None,
            "cpu_other_threads_percent": round(100 * others / wall, 1) if wall > 0 else None,
            "cpu_children_percent_of_one_core": (
                round(100 * children / wall, 1) if children is not None and wall > 0 else None
            ),
            "threads": len(end_threads),
        }


def rss_breakdown(pid: int) -> dict[str, float] | None:
    """RSS by kind of mapping (/proc/PID/smaps): anonymous, CUDA libraries, torch's CPU libraries, other files.

    PyPI's Linux torch wheel maps its CUDA libraries (and touches them at
    import) even on a machine without a GPU; the container image installs the
    CPU-only wheel instead. Splitting them out says how much of a process's
    RSS is that, rather than the controller.
    """
    sizes = {"anonymous_mb": 0.0, "cuda_libraries_mb": 0.0, "torch_libraries_mb": 0.0, "other_files_mb": 0.0}
    current = "anonymous_mb"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head = line.split(None, 1)[0]
        if not head.endswith(":") or "-" in head:  # a mapping header: "start-end perms offset dev inode [path]"
            parts = line.split()
            path = parts[5] if len(parts) > 5 else ""
            if not path or path.startswith("["):
                current = "anonymous_mb"
            elif "/nvidia/" in path or "cuda" in path.rsplit("/", 1)[-1].lower() or "/cuda/" in path:
                current = "cuda_libraries_mb"
            elif "/torch/" in path:
                current = "torch_libraries_mb"
            else:
                current = "other_files_mb"
        elif head == "Rss:":
            sizes[current] += int(line.split()[1]) / 1024
    return {k: round(v, 1) for k, v in sizes.items()}
