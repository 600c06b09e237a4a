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

    def readiness_problem(self) -> str | None:
        if self.status == "unavailable":
            return f"TRM model not loaded ({self.detail}); fix the checkpoint or run with --no-model"
        return None


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch  # only when asked to choose

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(enabled: bool, checkpoint_dir: Path | None, device: str, catalog: Catalog) -> ModelState:
    """Load the TRM checkpoint; a missing or incompatible one leaves the TRM stage handing over."""
    if not enabled:
        return ModelState(None, "disabled", "disabled with --no-model")
    try:
        from models.selector import CheckpointError, TRMSelector
    except ImportError as exc:
        return ModelState(None, "unavailable", f"the models package cannot be imported: {exc}")
    started = time.perf_counter()
    try:
        # One intra-op thread: decisions already run concurrently in worker threads next to the event loop, and
        # on a small node torch's default (one thread per core) makes those calls spin against each other and the
        # loop; BENCHMARKS.md (profile) measured the model path several times slower under load with two.
        selector = TRMSelector.load(
            checkpoint_dir=checkpoint_dir, device=resolve_device(device), catalog=catalog, threads=1
        )
    except (CheckpointError, OSError) as exc:
        log.error("TRM model not loaded: %s", exc)
        return ModelState(None, "unavailable", str(exc))
    except Exception as exc:  # noqa: BLE001 - corrupt sizes fail anywhere inside torch; that must only disable the stage
        detail = (
            f"checkpoint {checkpoint_dir or 'shipped with the package'} cannot be loaded: {type(exc).__name__}: {exc}"
        )
        log.error("TRM model not loaded: %s", detail)
        return ModelState(None, "unavailable", detail)
    log.info(
        "TRM model loaded",
        extra={"seconds": round(time.perf_counter() - started, 2), "device": str(getattr(selector, "device", "cpu"))},
    )
    return ModelState(selector, "loaded", "loaded")
