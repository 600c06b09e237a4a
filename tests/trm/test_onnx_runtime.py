"""ONNX serving (issue #14): the same decisions as torch, no torch in the serving process, a strict GPU.

- parity: on every shipped dataset split, the ONNX and torch runtimes decide identically (function,
  parameters, steps) with confidences within 1e-4, for the TRM and the plain baseline;
- serving with onnxruntime never imports torch (a fresh interpreter, `sys.modules` checked);
- `--device cuda` without a usable GPU is refused with the reason (never a silent CPU); `auto` falls back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.selector import DEFAULT_CHECKPOINT_DIR, DeviceUnavailableError, TRMSelector

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT / "models" / "datasets"
SPLITS = sorted(DATASETS.glob("*.jsonl")) + sorted((DATASETS / "sources").glob("*.jsonl"))
CHECKPOINTS = (DEFAULT_CHECKPOINT_DIR, DEFAULT_CHECKPOINT_DIR.parent / "plain")


@pytest.fixture(scope="module", params=CHECKPOINTS, ids=[c.name for c in CHECKPOINTS])
def both(request) -> tuple[TRMSelector, TRMSelector]:
    return (
        TRMSelector.load(request.param, runtime="onnx", threads=1),
        TRMSelector.load(request.param, runtime="torch", threads=1),
    )


def test_the_splits_are_there() -> None:
    assert len(SPLITS) >= 10, SPLITS  # 4 generated splits + the per-source files


@pytest.mark.parametrize("split", SPLITS, ids=[str(p.relative_to(DATASETS)) for p in SPLITS])
def test_onnx_decides_as_torch_on_every_split(both, split: Path) -> None:
    onnx_sel, torch_sel = both
    assert (onnx_sel.runtime, torch_sel.runtime) == ("onnx", "torch")
    alerts = [json.loads(line)["alert"] for line in split.read_text().splitlines() if line.strip()]
    assert alerts
    for start in range(0, len(alerts), 256):
        chunk = alerts[start : start + 256]
        for alert, a, b in zip(chunk, onnx_sel.select_batch(chunk), torch_sel.select_batch(chunk), strict=True):
            assert (a.lambda_function, a.parameters, a.steps) == (b.lambda_function, b.parameters, b.steps), alert
            assert abs(a.confidence - b.confidence) <= 1e-4, (alert, a.confidence, b.confidence)


def test_one_alert_at_a_time_matches_the_batch(both) -> None:
    """Batch 1 (the serving shape, with early halting per alert) agrees with the batched run."""
    onnx_sel, _ = both
    alerts = [json.loads(line)["alert"] for line in (DATASETS / "val.jsonl").read_text().splitlines()[:40]]
    batched = onnx_sel.select_batch(alerts)
    for alert, expected in zip(alerts, batched, strict=True):
        got = onnx_sel.select(alert)
        assert (got.lambda_function, got.parameters, got.steps) == (
            expected.lambda_function,
            expected.parameters,
            expected.steps,
        )
        assert abs(got.confidence - expected.confidence) <= 1e-4


SERVING = r"""
import json, sys
from controller.engine.model_loader import load_model
from runbooks import default_catalog
import controller.app, controller.tools.cli  # the whole serving process's imports
state = load_model(True, None, "cpu", default_catalog(), runtime=sys.argv[1])
d = state.selector.select({"status": "firing", "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop",
                                                          "pod": "api-1", "container": "api"}})
print(json.dumps({"status": state.status, "runtime": state.selector.runtime, "function": d.lambda_function,
                  "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))[:5]}))
"""


def _serve(runtime: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SERVING, runtime], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_serving_with_onnxruntime_never_imports_torch() -> None:
    got = _serve("onnx")
    assert got["status"] == "loaded" and got["runtime"] == "onnx" and got["function"] == "pod-restart", got
    assert got["torch"] == [], got


def test_the_probe_sees_torch_when_it_is_imported() -> None:
    """The check above can fail: with the torch runtime the same probe finds torch in sys.modules."""
    got = _serve("torch")
    assert got["status"] == "loaded" and got["runtime"] == "torch" and "torch" in got["torch"], got


def test_cuda_is_strict_for_onnxruntime(monkeypatch) -> None:
    import onnxruntime

    from controller.engine.model_loader import load_model
    from runbooks import default_catalog

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        TRMSelector.load(runtime="onnx", device="cuda")
    state = load_model(True, None, "cuda", default_catalog(), runtime="onnx")
    assert state.status == "unavailable" and "CUDAExecutionProvider" in state.detail
    assert state.readiness_problem() is not None and (state.requested_device, state.actual_device) == ("cuda", "none")
    auto = TRMSelector.load(runtime="onnx", device="auto")
    assert (auto.device, auto.requested_device, auto.info["device"]) == ("cpu", "auto", "cpu")


def test_cuda_is_strict_for_torch(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match=r"torch\.cuda\.is_available\(\) is false"):
        TRMSelector.load(runtime="torch", device="cuda")
    assert TRMSelector.load(runtime="torch", device="auto").device == "cpu"


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="runtime"):
        TRMSelector.load(runtime="tensorflow")  # type: ignore[arg-type]
