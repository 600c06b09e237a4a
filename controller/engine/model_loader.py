"""Loading the TRM for the TRM stage: the selector, or why there is none.

A missing or incompatible checkpoint never stops the process: the TRM stage
then reports ERROR and hands over, and readiness says why ("unavailable").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from models.selector import TRMSelector
    from runbooks import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelState:
    """The TRM selector, or why there is none; "unavailable" keeps the process not-ready."""

    selector: TRMSelector | None
    status: Literal["loaded", "disabled", "unavailable"]
    detail: str
    requested_device: str = "cpu"
    runtime: str = "onnx"

    @property
    def actual_device(self) -> str:
        """Where the model runs ("none" when it is not loaded)."""
        return "none" if self.selector is None else str(getattr(self.selector, "device", "cpu"))

    def readiness_problem(self) -> str | None:
        if self.status == "unavailable":
            return f"TRM model not loaded ({self.detail}); fix the checkpoint or run with --no-model"
        return None


def load_model(
    enabled: bool, checkpoint_dir: Path | None, device: str, catalog: Catalog, runtime: str = "onnx"
) -> ModelState:
    """Load the TRM checkpoint; a missing or incompatible one leaves the TRM stage handing over.

    `runtime` "onnx" (the default: onnxruntime, torch is never imported) or "torch" (the `train` extra).
    `device` "cuda" is strict: no usable GPU leaves the model unavailable (not ready) with the reason;
    "auto" falls back to the CPU.
    """
    if not enabled:
        return ModelState(None, "disabled", "disabled with --no-model", device, runtime)
    try:
        from models.selector import CheckpointError, DeviceUnavailableError, TRMSelector
    except ImportError as exc:
        return ModelState(None, "unavailable", f"the models package cannot be imported: {exc}", device, runtime)
    started = time.perf_counter()
    try:
        # One intra-op thread: decisions already run concurrently in worker threads next to the event loop, and
        # on a small node torch's default (one thread per core) makes those calls spin against each other and the
        # loop; BENCHMARKS.md (profile) measured the model path several times slower under load with two.
        selector = TRMSelector.load(
            checkpoint_dir=checkpoint_dir, device=device, catalog=catalog, threads=1, runtime=runtime
        )
    except (CheckpointError, DeviceUnavailableError, OSError) as exc:
        log.error("TRM model not loaded: %s", exc)
        return ModelState(None, "unavailable", str(exc), device, runtime)
    except Exception as exc:  # noqa: BLE001 - corrupt sizes fail anywhere inside the runtime; that must only disable the stage
        detail = (
            f"checkpoint {checkpoint_dir or 'shipped with the package'} cannot be loaded: {type(exc).__name__}: {exc}"
        )
        log.error("TRM model not loaded: %s", detail)
        return ModelState(None, "unavailable", detail, device, runtime)
    log.info(
        "TRM model loaded",
        extra={
            "seconds": round(time.perf_counter() - started, 2),
            "device": str(getattr(selector, "device", "cpu")),
            "requested_device": device,
            "runtime": runtime,
        },
    )
    return ModelState(selector, "loaded", "loaded", device, runtime)
