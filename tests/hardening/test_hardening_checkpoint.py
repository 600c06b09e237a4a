"""A TRM checkpoint that is missing, corrupt, or made for another catalog never stops the controller.

Claims (issue #6, "Faults"): the process starts anyway with a clear message
naming the problem; the TRM stage is disabled — `agent_sre_trm_model_loaded 0`
and a note in `/readyz` (not ready: issue #4 makes a model that should be
there but is not a readiness problem, so an operator sees it) — and every
policy's chain goes on to its next stage, so alerts are still remediated.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.engine.model_loader import ModelState, load_model
from controller.schemas.decision import LAMBDA_TRIGGER
from runbooks import default_catalog
from tests.e2e.harness import (
    ControllerProcess,
    child_env,
    http,
    metric_value,
    wait_until,
)
from tests.hardening.support import RULES_POLICY, StartServer, crashloop, write_policy
from tests.pipeline.sink import CaptureSink

CATALOG = default_catalog()
TOKEN = "checkpoint-token"
# The TRM first, rules after it: with the model gone, the rules decide.
TRM_THEN_RULES = RULES_POLICY.replace("  chain:\n", "  chain:\n    - trm: {minConfidence: 0.5}\n")


def _config(**model: Any) -> dict[str, Any]:
    """A config.json that passes the catalog checks, with `model` fields on top."""
    functions = ["none", *CATALOG.names]
    return {
        "model": {"functions": functions, **model},
        "catalog_hash": CATALOG.hash,
        "catalog_functions": list(CATALOG.names),
    }


def _write(directory: Path, config: Any = None, weights: bytes | None = b"\x00" * 64) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (directory / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights is not None:
        (directory / "model.safetensors").write_bytes(weights)
    return directory


def _safetensors() -> bytes:
    """A well-formed safetensors file holding one float (tensor names that fit no model)."""
    header = json.dumps({"bogus": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\x00" * 4


# (id, how to make the bad checkpoint directory, words the message must contain)
BAD_CHECKPOINTS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("no-directory", lambda d: d / "nowhere", "missing"),
    ("empty-directory", lambda d: _write(d, None, None), "missing"),
    ("no-weights", lambda d: _write(d, _config(), None), "missing"),
    ("config-not-json", lambda d: _write(d, "{not json"), "corrupt"),
    ("config-a-list", lambda d: _write(d, "[1, 2]"), "corrupt"),
    ("config-binary", lambda d: (_write(d) / "config.json").write_bytes(b"\xff\xfe\x00garbage") and d, "corrupt"),
    ("config-wrong-types", lambda d: _write(d, {"model": {"functions": 5, "encoder": 3}}), "corrupt"),
    ("other-catalog", lambda d: _write(d, {**_config(), "catalog_hash": "0" * 64}), "catalog"),
    ("other-functions", lambda d: _write(d, {**_config(functions=["none", "pod-restart"])}), "functions"),
    ("weights-garbage", lambda d: _write(d, _config(), b"\x00" * 64), "corrupt"),
    ("weights-huge-header", lambda d: _write(d, _config(), (2**62).to_bytes(8, "little") + b"{}"), "corrupt"),
    ("weights-empty", lambda d: _write(d, _config(), b""), "corrupt"),
    ("weights-other-model", lambda d: _write(d, _config(), _safetensors()), "do not fit"),
    ("sizes-impossible", lambda d: _write(d, _config(d_model=96, n_heads=7), _safetensors()), "checkpoint"),
    ("sizes-negative", lambda d: _write(d, _config(d_model=-4, n_layers=-1), _safetensors()), "checkpoint"),
    ("sizes-zero", lambda d: _write(d, _config(d_model=0, n_heads=0), _safetensors()), "checkpoint"),
]


@pytest.mark.parametrize(("case", "make", "words"), BAD_CHECKPOINTS, ids=[c for c, _, _ in BAD_CHECKPOINTS])
def test_a_bad_checkpoint_disables_the_trm_stage_with_a_clear_reason(
    tmp_path: Path, case: str, make: Callable[[Path], Path], words: str
) -> None:
    directory = make(tmp_path / "checkpoint")
    state = load_model(True, directory, "cpu", CATALOG, runtime="torch")  # never raises
    assert state.selector is None
    assert state.status == "unavailable"
    assert words in state.detail.lower(), state.detail
    assert str(directory) in state.detail or "checkpoint" in state.detail.lower()
    problem = state.readiness_problem()
    assert problem is not None and "TRM model not loaded" in problem and "--no-model" in problem


async def test_with_the_model_unavailable_the_chain_goes_on_and_says_so(
    controller: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    model = load_model(True, tmp_path / "no-such-checkpoint", "cpu", CATALOG)
    policy = write_policy(tmp_path / "p", TRM_THEN_RULES)
    server = await controller(token=TOKEN, sink=sink.url, policies=[policy], model=model)
    async with server.client() as http_client:
        ready = await http_client.get("/readyz")
        metrics = (await http_client.get("/metrics")).text
        accepted = await http_client.post("/alertmanager", json=crashloop("cart-1"))
        await server.idle()
    assert ready.status_code == 503
    (note,) = [r for r in ready.json()["reasons"] if "TRM" in r]
    assert "no-such-checkpoint" in note and "missing" in note
    assert metric_value(metrics, "agent_sre_trm_model_loaded") == 0
    # requested cpu, actual none: the device metric says the model runs nowhere (issue #14)
    assert metric_value(metrics, "agent_sre_model_device_info", requested="cpu", actual="none", runtime="onnx") == 1
    assert accepted.status_code == 200
    (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
    data = trigger.data()
    assert data["triggered_by"].endswith("rules") and data["parameters"]["name"] == "cart-1"
    async with server.client() as http_client:
        decision = (await http_client.get(f"/decisions/{data['correlation_id']}")).json()
    trm, rules = decision["trace"]
    assert trm["stage"] == "trm" and trm["outcome"] != "accepted"
    assert "model" in trm["reason"].lower()
    assert rules["stage"] == "rules" and rules["outcome"] == "accepted"


def test_the_process_starts_with_a_bad_checkpoint_and_says_why(tmp_path: Path, sink: CaptureSink) -> None:
    checkpoint = _write(tmp_path / "checkpoint", {**_config(), "catalog_hash": "f" * 64})
    policy = write_policy(tmp_path / "p", TRM_THEN_RULES)
    proc = ControllerProcess(
        [
            "--standalone",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
            "--checkpoint",
            str(checkpoint),
            "--policies",
            str(policy),
        ],
        child_env(K_SINK=sink.url, TRM_SRE_WEBHOOK_TOKEN=TOKEN),
        tmp_path / "trm-sre.log",
    )
    url = proc.start()
    try:
        log = proc.log_text()
        assert "model: unavailable" in log  # the start-up banner
        assert "TRM model not loaded" in log and "ffffffffffff" in log and "retrain" in log  # the reason, once
        assert "Traceback" not in log
        status, ready = http("GET", f"{url}/readyz")
        assert status == 503 and any("TRM model not loaded" in r for r in ready["reasons"])
        _, metrics = http("GET", f"{url}/metrics")
        assert metric_value(metrics, "agent_sre_trm_model_loaded") == 0
        status, _ = http("POST", f"{url}/alertmanager", crashloop("cart-2"), token=TOKEN)
        assert status == 200
        wait_until("the rules' trigger", lambda: sink.accepted_of(LAMBDA_TRIGGER), 60, proc)
        assert sink.accepted_of(LAMBDA_TRIGGER)[0].data()["triggered_by"].endswith("rules")
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.stop() == 0, proc.log_tail()


def _shipped_copy(tmp_path: Path) -> Path:
    from models.selector import DEFAULT_CHECKPOINT_DIR

    return Path(shutil.copytree(DEFAULT_CHECKPOINT_DIR, tmp_path / "checkpoint"))


def _replace(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path.parent


# The ONNX runtime's own refusals (the default runtime): (id, make, words the message must contain)
BAD_ONNX: list[tuple[str, Callable[[Path], Path], str]] = [
    ("no-onnx", lambda d: (_shipped_copy(d) / "model.onnx").unlink() or d / "checkpoint", "export"),
    ("onnx-garbage", lambda d: _replace(_shipped_copy(d) / "model.onnx", b"\x00garbage" * 10), "cannot be loaded"),
    ("onnx-empty", lambda d: _replace(_shipped_copy(d) / "model.onnx", b""), "cannot be loaded"),
    (
        "onnx-other-weights",
        lambda d: _replace(
            _shipped_copy(d) / "model.safetensors", (d / "checkpoint" / "model.safetensors").read_bytes() + b" "
        ),
        "other weights",
    ),
    (
        "onnx-other-catalog",
        lambda d: _replace(
            _shipped_copy(d) / "config.json",
            json.dumps(
                {**json.loads((d / "checkpoint" / "config.json").read_text()), "catalog_hash": "0" * 64}
            ).encode(),
        ),
        "catalog",
    ),
]


@pytest.mark.parametrize(("case", "make", "words"), BAD_ONNX, ids=[c for c, _, _ in BAD_ONNX])
def test_a_bad_onnx_model_disables_the_trm_stage_with_a_clear_reason(
    tmp_path: Path, case: str, make: Callable[[Path], Path], words: str
) -> None:
    directory = make(tmp_path)
    state = load_model(True, directory, "cpu", CATALOG, runtime="onnx")
    assert state.selector is None and state.status == "unavailable", state.detail
    assert words in state.detail.lower(), state.detail
    assert state.readiness_problem() is not None


def test_a_checkpoint_made_for_this_catalog_still_loads(tmp_path: Path) -> None:
    """The guard is not overcautious: the shipped checkpoint, copied elsewhere, loads (when it has been trained)."""
    from models.selector import DEFAULT_CHECKPOINT_DIR

    if not (DEFAULT_CHECKPOINT_DIR / "config.json").is_file():
        pytest.fail(f"no shipped checkpoint in {DEFAULT_CHECKPOINT_DIR}")
    copy = shutil.copytree(DEFAULT_CHECKPOINT_DIR, tmp_path / "copy")
    for runtime in ("onnx", "torch"):
        state = load_model(True, Path(copy), "cpu", CATALOG, runtime=runtime)
        assert isinstance(state, ModelState) and state.status == "loaded", (runtime, state.detail)
        assert state.selector is not None and state.selector.runtime == runtime
