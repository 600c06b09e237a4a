"""The two ways to run a checkpoint: ONNX Runtime (serving, no torch) and torch (training, `--runtime torch`).

The ONNX graph (`models.export`) is ONE supervision step: (feats, segments, positions, slot_mask, y, z) ->
(y, z, function, pointers, enums, halt). The halting loop stays here in numpy and is the same loop as
`TRM.infer`: halted examples leave the batch, so a batch of one stops as soon as it is confident (most
alerts halt after one step; an unrolled graph would always pay for all `max_steps`).

Nothing in this module imports torch unless the torch runtime is asked for; a test runs the ONNX
selector in a fresh interpreter and checks that `torch` never enters `sys.modules`.

Device: "cpu"; "cuda" is strict (DeviceUnavailableError with the reason when the runtime cannot run on a
GPU: onnxruntime without the CUDAExecutionProvider, or torch without CUDA), never a silent CPU fall back;
"auto" is the explicit fall back (cuda when it works, else cpu).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.config import Outputs, TRMConfig
from models.encoding import EncodedAlert
from models.selector import (
    CONFIG_FILE,
    MODEL_FILE,
    ONNX_FILE,
    CheckpointError,
    DeviceUnavailableError,
    check_catalog,
    read_config,
)
from runbooks import Catalog

CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"
INPUTS = ("feats", "segments", "positions", "slot_mask", "y", "z")
OUTPUTS = ("y_next", "z_next", "function", "pointers", "enums", "halt")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stack(encoded: Sequence[EncodedAlert], cfg: TRMConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Encoded alerts -> the graph's int64 / bool arrays (B, L, F), (B, L), (B, L), (B, S)."""
    feats = np.stack([e.feats for e in encoded]).astype(np.int64)
    segments = np.stack([e.segments for e in encoded]).astype(np.int64)
    positions = np.stack([e.positions for e in encoded]).astype(np.int64)
    slot_mask = np.zeros((len(encoded), cfg.encoder.max_labels), dtype=bool)
    for i, e in enumerate(encoded):
        slot_mask[i, : len(e.slot_values)] = True
    return feats, segments, positions, slot_mask


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


class OnnxRunner:
    """One ONNX Runtime session for the step graph, and the halting loop in numpy."""

    runtime = "onnx"

    def __init__(self, session: Any, cfg: TRMConfig, meta: dict[str, Any], device: str) -> None:
        self.session, self.cfg, self.meta, self.device = session, cfg, meta, device
        md = session.get_modelmeta().custom_metadata_map
        self.y_init = np.asarray(json.loads(md["y_init"]), dtype=np.float32)
        self.z_init = np.asarray(json.loads(md["z_init"]), dtype=np.float32)
        self.n_parameters = int(md.get("parameters", meta.get("parameters", 0)))

    @property
    def model(self) -> OnnxRunner:
        return self

    def num_parameters(self) -> int:
        return self.n_parameters

    def infer(
        self, encoded: Sequence[EncodedAlert], max_steps: int | None = None, threshold: float | None = None
    ) -> tuple[Outputs, np.ndarray]:
        cfg = self.cfg
        max_steps = 1 if not cfg.recursive else max(1, max_steps or cfg.max_steps)
        threshold = cfg.halt_threshold if threshold is None else threshold
        inputs = stack(encoded, cfg)
        B, L = inputs[1].shape
        y = np.ascontiguousarray(np.broadcast_to(self.y_init, (B, L, cfg.d_model)))
        z = np.ascontiguousarray(np.broadcast_to(self.z_init, (B, L, cfg.d_model)))
        active = np.arange(B)
        steps = np.zeros(B, dtype=np.int64)
        final: list[np.ndarray] | None = None
        for step in range(1, max_steps + 1):
            sub = inputs if len(active) == B else tuple(t[active] for t in inputs)
            y, z, *out = self.session.run(None, dict(zip(INPUTS, (*sub, y, z), strict=True)))
            if final is None:
                final = [np.empty((B, *t.shape[1:]), dtype=t.dtype) for t in out]
            halt = out[3]
            done = _sigmoid(halt) >= threshold if step < max_steps else np.ones(halt.shape, dtype=bool)
            idx = active[done]
            for f, t in zip(final, out, strict=True):
                f[idx] = t[done]
            steps[idx] = step
            keep = ~done
            if not keep.any():
                break
            active = active[keep]
            y, z = y[keep], z[keep]
        assert final is not None
        return Outputs(*final), steps


class TorchRunner:
    """The torch TRM behind the same interface (the `train` extra)."""

    runtime = "torch"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.model = model.eval()
        self.device = str(device)

    @property
    def cfg(self) -> TRMConfig:
        return self.model.cfg

    def num_parameters(self) -> int:
        return int(self.model.num_parameters())

    def infer(
        self, encoded: Sequence[EncodedAlert], max_steps: int | None = None, threshold: float | None = None
    ) -> tuple[Outputs, np.ndarray]:
        from models.selector import to_batch

        out, steps = self.model.infer(
            to_batch(encoded, self.cfg, self.device), max_steps=max_steps, threshold=threshold
        )
        return Outputs(*(t.float().cpu().numpy() for t in out)), steps.cpu().numpy()


def as_runner(model: Any, device: str = "cpu") -> OnnxRunner | TorchRunner:
    if isinstance(model, (OnnxRunner, TorchRunner)):
        return model
    return TorchRunner(model, device)


def onnx_session(path: Path, device: str, threads: int | None) -> tuple[Any, str]:
    """An InferenceSession on `device`; DeviceUnavailableError when "cuda" cannot be had."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    want_cuda = device.startswith("cuda") or (device == "auto" and CUDA_PROVIDER in available)
    if device.startswith("cuda") and CUDA_PROVIDER not in available:
        raise DeviceUnavailableError(
            f"--device cuda: onnxruntime has no CUDAExecutionProvider (available: {', '.join(available)}); "
            "install onnxruntime-gpu (the CUDA image), or run with --device cpu / --device auto"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = max(1, int(threads))
    options.log_severity_level = 3
    providers: list[Any] = [CPU_PROVIDER]
    if want_cuda:
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        providers = [(CUDA_PROVIDER, {"device_id": index}), CPU_PROVIDER]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        if want_cuda and device == "auto":
            return onnx_session(path, "cpu", threads)
        raise CheckpointError(f"ONNX model {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    got_cuda = session.get_providers()[0] == CUDA_PROVIDER
    if want_cuda and not got_cuda:
        # ORT falls back to the CPU on its own when the CUDA libraries do not load: strict means say so.
        if device == "auto":
            return session, "cpu"
        raise DeviceUnavailableError(
            f"--device cuda: onnxruntime could not start the CUDAExecutionProvider (session providers: "
            f"{', '.join(session.get_providers())}; check the CUDA/cuDNN libraries and the GPU resource)"
        )
    return session, ("cuda" if got_cuda else "cpu")


def load_onnx(directory: Path, catalog: Catalog, device: str, threads: int | None) -> tuple[OnnxRunner, dict]:
    cfg, meta = read_config(directory, catalog)
    path = directory / ONNX_FILE
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file {path} is missing: export it with `trm-sre export --checkpoint {directory}` "
            "(needs trm-sre[train]), or serve with --runtime torch"
        )
    session, actual = onnx_session(path, device, threads)
    md = session.get_modelmeta().custom_metadata_map
    check_catalog(path, md.get("catalog_hash"), cfg, catalog)
    for key in ("data_version", "code_version"):
        if md.get(key) != str(meta.get(key)):
            raise CheckpointError(
                f"{path} says {key} {md.get(key)!r} but {directory / CONFIG_FILE} says {meta.get(key)!r}: re-export it"
            )
    weights = directory / MODEL_FILE
    if weights.is_file() and md.get("weights_sha256") != file_sha256(weights):
        raise CheckpointError(
            f"{path} was exported from other weights than {weights} (retrained since?): re-export it with "
            f"`trm-sre export --checkpoint {directory}`"
        )
    if "y_init" not in md or "z_init" not in md:
        raise CheckpointError(f"{path} lacks the initial carry (y_init, z_init): re-export it")
    return OnnxRunner(session, cfg, meta, actual), meta


def load_torch(directory: Path, catalog: Catalog, device: str, threads: int | None) -> tuple[TorchRunner, dict]:
    try:
        import torch
    except ImportError as exc:
        raise CheckpointError(
            f"--runtime torch needs torch, which is the `train` extra (pip install 'trm-sre[train]'): {exc}"
        ) from exc
    from models.model import TRM
    from models.selector import read_checkpoint

    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "--device cuda: torch.cuda.is_available() is false (no GPU visible, or a CPU-only torch build); "
            "run with --device cpu / --device auto"
        )
    actual = "cuda" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "cpu"
    cfg, meta, state = read_checkpoint(directory, catalog)
    model = TRM(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights in {directory} do not fit its config: {exc}") from exc
    return TorchRunner(model.to(actual), actual), meta


def load_runner(
    directory: Path, catalog: Catalog, *, runtime: str, device: str, threads: int | None
) -> tuple[OnnxRunner | TorchRunner, dict]:
    if runtime == "onnx":
        return load_onnx(directory, catalog, device, threads)
    if runtime == "torch":
        return load_torch(directory, catalog, device, threads)
    raise ValueError(f"unknown model runtime {runtime!r} (onnx or torch)")
