"""GPU utilization of the device the TRM model runs on, for `agent_reasoning_gpu_utilization`.

Only a model on a CUDA device gets a reader (on the CPU the metric is absent,
not zero). It asks NVML through torch when `pynvml` is installed, else
`nvidia-smi`; either answer is kept a few seconds, so a scrape costs at most
one short query. An unreadable GPU reads NaN.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable

_CACHE_S = 5.0
_SMI_TIMEOUT_S = 2.0


def gpu_utilization_reader(device: str) -> Callable[[], float] | None:
    """A 0-1 reader for the GPU behind `device` ("cuda", "cuda:1"); None for any other device."""
    if not str(device).startswith("cuda"):
        return None
    index = int(str(device).partition(":")[2] or 0)
    lock = threading.Lock()
    cached: list[float] = [math.nan, -math.inf]  # value, read at (monotonic)

    def query() -> float:
        # torch asks NVML through pynvml; without it (or without NVML) ask nvidia-smi. Only a torch that is
        # already loaded (--runtime torch): the ONNX runtime serves without ever importing torch.
        torch = sys.modules.get("torch")
        if torch is not None:
            with contextlib.suppress(Exception):
                return float(torch.cuda.utilization(index)) / 100.0
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return math.nan
        try:
            out = subprocess.run(
                [smi, f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=_SMI_TIMEOUT_S,
                check=True,
            ).stdout
            return float(out.strip().splitlines()[0]) / 100.0
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return math.nan

    def read() -> float:
        with lock:
            now = time.monotonic()
            if now - cached[1] >= _CACHE_S:
                cached[0], cached[1] = query(), now
            return cached[0]

    return read
