"""The public API of the model: alert in, checked decision out.

    selector = TRMSelector.load()                 # models/checkpoints/trm, catalog checked
    decision = selector.select(alert)             # one Alertmanager v4 alert object
    decision.lambda_function, decision.parameters, decision.confidence, decision.steps

Every decoded call goes through `catalog.validate_call`, and every copied parameter must come
from a label the catalog lists among that parameter's `sources` (else: abstain); if it is refused (a hostile or
malformed label value, a missing required label), the decision is an abstention
(`lambda_function=None`). A parameter value that fails the runbook's validation is never
emitted. `lambda_function` is the model's argmax even at low confidence: the caller applies
its own threshold (the controller a policy's minConfidence, the eval `default_threshold`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.config import Outputs, TRMConfig
from models.encoding import AlertEncoder, EncodedAlert
from models.version import DATA_VERSION
from runbooks import Catalog, default_catalog

if TYPE_CHECKING:  # torch is the `train` extra: the ONNX serving path never imports it
    import torch

    from models.model import TRM, Batch

DEFAULT_CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints" / "trm"
MODEL_FILE, CONFIG_FILE, ONNX_FILE = "model.safetensors", "config.json", "model.onnx"
RUNTIMES = ("onnx", "torch")
Runtime = Literal["onnx", "torch"]
CODE_VERSION = "trm-sre-model/1"
_SOURCES = ("encoding.py", "config.py", "model.py", "selector.py", "runtime.py")


def source_hash() -> str:
    """Short hash of the code that defines the model's behaviour (recorded in checkpoints)."""
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((Path(__file__).resolve().parent / name).read_bytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class ModelDecision:
    lambda_function: str | None  # None = no automated remediation
    parameters: dict[str, str | int]
    confidence: float  # calibrated P(decision exactly right), 0..1
    steps: int  # supervision steps taken before halting
    text: str  # JSON text {"lambda_function": ..., "parameters": {...}, "confidence": ...}


class CheckpointError(RuntimeError):
    """The checkpoint is missing, corrupt, or was trained against a different runbook catalog."""


class DeviceUnavailableError(RuntimeError):
    """`--device cuda` was asked for and the runtime cannot run there: never a silent fall back to the CPU."""


def make_decision(function: str | None, parameters: dict[str, Any], confidence: float, steps: int) -> ModelDecision:
    confidence = float(min(1.0, max(0.0, confidence))) if math.isfinite(confidence) else 0.0
    text = json.dumps(
        {"lambda_function": function, "parameters": parameters, "confidence": round(confidence, 4)}, sort_keys=True
    )
    return ModelDecision(function, dict(parameters), confidence, int(steps), text)


def to_batch(encoded: Sequence[EncodedAlert], cfg: TRMConfig, device: torch.device | str = "cpu") -> Batch:
    """Stack encoded alerts into tensors (B, L, F) / (B, L) / (B, S)."""
    import torch

    from models.model import Batch

    feats = torch.from_numpy(np.stack([e.feats for e in encoded]).astype(np.int64))
    segs = torch.from_numpy(np.stack([e.segments for e in encoded]).astype(np.int64))
    pos = torch.from_numpy(np.stack([e.positions for e in encoded]).astype(np.int64))
    slot_mask = torch.zeros(len(encoded), cfg.encoder.max_labels, dtype=torch.bool)
    for i, e in enumerate(encoded):
        slot_mask[i, : len(e.slot_values)] = True
    return Batch(feats.to(device), segs.to(device), pos.to(device), slot_mask.to(device))


class Decoder:
    """Model outputs (one row) + the encoded alert -> a validated call, or an abstention."""

    def __init__(self, cfg: TRMConfig, catalog: Catalog) -> None:
        self.cfg, self.catalog = cfg, catalog
        self.enum_offsets: dict[str, tuple[int, tuple[str, ...]]] = {}
        offset = 0
        for name, values in cfg.enum_params.items():
            self.enum_offsets[name] = (offset, values)
            offset += len(values)

    def raw_call(
        self, fn_index: int, pointers: np.ndarray, enums: np.ndarray, enc: EncodedAlert
    ) -> tuple[str | None, dict[str, Any]]:
        function = self.cfg.functions[fn_index] if fn_index > 0 else None
        if function is None:
            return None, {}
        runbook = self.catalog.get(function)
        if runbook is None:
            return None, {}
        raw: dict[str, Any] = {}
        for param in runbook.parameters:
            if param.name in self.enum_offsets:
                off, values = self.enum_offsets[param.name]
                raw[param.name] = values[int(np.argmax(enums[off : off + len(values)]))]
            elif param.name in self.cfg.pointer_params:
                j = int(np.argmax(pointers[self.cfg.pointer_params.index(param.name)]))
                if j < len(enc.slot_values):
                    if self.cfg.strict_sources and param.sources and enc.slot_keys[j] not in param.sources:
                        return None, {}  # e.g. a deployment name read from `service`: refuse rather than guess
                    raw[param.name] = enc.slot_values[j]  # copied verbatim: never generated
        return function, raw

    def decide(self, out: Outputs, row: int, enc: EncodedAlert, steps: int) -> ModelDecision:
        cfg = self.cfg
        logit = float(out.halt[row])
        confidence = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, cfg.calib_scale * logit + cfg.calib_bias))))
        function, raw = self.raw_call(
            int(np.argmax(out.function[row])), np.asarray(out.pointers[row]), np.asarray(out.enums[row]), enc
        )
        if function is None:
            return make_decision(None, {}, confidence, steps)
        try:
            clean = self.catalog.validate_call(function, raw)
        except Exception:  # noqa: BLE001 - InvalidCall, or a hostile value whose comparison raised: abstain
            return make_decision(None, {}, confidence, steps)
        return make_decision(function, clean, confidence, steps)


def save_checkpoint(model: TRM, directory: Path, catalog: Catalog, extra: Mapping[str, Any] | None = None) -> None:
    """model.safetensors + config.json (architecture, encoder, catalog hash, versions, metrics)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / MODEL_FILE), metadata={"format": "pt", "catalog_hash": catalog.hash})
    config = {
        "model": model.cfg.to_json(),
        "catalog_hash": catalog.hash,
        "catalog_functions": list(catalog.names),
        "data_version": DATA_VERSION,
        "code_version": CODE_VERSION,
        "source_hash": source_hash(),
        "parameters": model.num_parameters(),
    } | dict(extra or {})
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config(directory: Path, catalog: Catalog) -> tuple[TRMConfig, dict[str, Any]]:
    """Read config.json and check it against the catalog (no torch); CheckpointError with the reason."""
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint file {config_path} is missing (train one with `python -m models.train`)")
    try:
        meta = json.loads(config_path.read_text())
        cfg = TRMConfig.from_json(meta["model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint config {config_path} is corrupt: {exc}") from exc
    check_catalog(directory, meta.get("catalog_hash"), cfg, catalog)
    return cfg, meta


def check_catalog(directory: Path, catalog_hash: Any, cfg: TRMConfig, catalog: Catalog) -> None:
    if catalog_hash != catalog.hash:
        raise CheckpointError(
            f"checkpoint {directory} was trained for runbook catalog {str(catalog_hash)[:12]}, "
            f"but runbooks/ is now {catalog.hash[:12]} (functions {', '.join(catalog.names)}): retrain the model "
            "(`python -m models.train`) so its outputs match the catalog"
        )
    if tuple(cfg.functions[1:]) != tuple(catalog.names):
        raise CheckpointError(
            f"checkpoint {directory} outputs functions {cfg.functions[1:]} but the catalog has {catalog.names}"
        )


def read_checkpoint(directory: Path, catalog: Catalog) -> tuple[TRMConfig, dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check a checkpoint; CheckpointError with the reason when it cannot be used (needs torch)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model_path = directory / MODEL_FILE
    for path in (directory / CONFIG_FILE, model_path):
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing (train one with `python -m models.train`)")
    cfg, meta = read_config(directory, catalog)
    try:
        state = load_file(str(model_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint weights {model_path} are corrupt: {exc}") from exc
    return cfg, meta, state


class TRMSelector:
    """Loads a checkpoint once; `select`/`select_batch` are thread-compatible (no mutable state per call).

    `model` is the torch TRM (the `train` extra) or an ONNX runner (`models.runtime.OnnxRunner`): both
    have `cfg`, `num_parameters()` and `infer(batch_of_encoded, max_steps, threshold) -> (Outputs, steps)`.
    """

    def __init__(
        self, model: Any, catalog: Catalog, meta: Mapping[str, Any] | None = None, device: str = "cpu"
    ) -> None:
        from models.runtime import as_runner

        self.runner = as_runner(model, device)
        self.cfg = self.runner.cfg
        self.catalog = catalog
        self.meta = dict(meta or {})
        self.device = self.runner.device
        self.runtime: Runtime = self.runner.runtime
        self.requested_device = device
        self.encoder = AlertEncoder(self.cfg.encoder)
        self.decoder = Decoder(self.cfg, catalog)

    @property
    def model(self) -> Any:
        """The torch TRM (torch runtime) or the ONNX runner."""
        return self.runner.model

    @classmethod
    def load(
        cls,
        checkpoint_dir: Path | None = None,
        *,
        device: str = "cpu",
        catalog: Catalog | None = None,
        threads: int | None = None,
        runtime: Runtime = "torch",
    ) -> TRMSelector:
        """Load a checkpoint for `runtime` on `device` ("cpu", "cuda" = strict, "auto" = cuda when available).

        DeviceUnavailableError when `device` is "cuda" and the runtime cannot run there.
        """
        from models.runtime import load_runner

        catalog = catalog or default_catalog()
        directory = Path(checkpoint_dir) if checkpoint_dir is not None else DEFAULT_CHECKPOINT_DIR
        runner, meta = load_runner(directory, catalog, runtime=runtime, device=device, threads=threads)
        selector = cls(runner, catalog, meta, runner.device)
        selector.requested_device = device
        return selector

    @property
    def info(self) -> dict[str, Any]:
        return {
            "parameters": self.runner.num_parameters(),
            "catalog_hash": self.catalog.hash,
            "code_version": self.meta.get("code_version", CODE_VERSION),
            "source_hash": self.meta.get("source_hash", ""),
            "data_version": self.meta.get("data_version", DATA_VERSION),
            "device": str(self.device),
            "requested_device": self.requested_device,
            "runtime": self.runtime,
            "recursive": self.cfg.recursive,
            "max_steps": self.cfg.max_steps,
            "halt_threshold": self.cfg.halt_threshold,
            "default_threshold": self.cfg.default_threshold,
            "metrics": self.meta.get("metrics", {}),
        }

    def select(self, alert: Mapping[str, Any], *, max_steps: int | None = None) -> ModelDecision:
        return self.select_batch([alert], max_steps=max_steps)[0]

    def select_batch(self, alerts: Sequence[Mapping[str, Any]], *, max_steps: int | None = None) -> list[ModelDecision]:
        if not alerts:
            return []
        encoded = [self.encoder.encode(a) for a in alerts]
        out, steps = self.runner.infer(encoded, max_steps=max_steps)
        return [self.decoder.decide(out, i, enc, int(steps[i])) for i, enc in enumerate(encoded)]

    def select_batch_forced(self, alerts: Sequence[Mapping[str, Any]], *, steps: int) -> list[ModelDecision]:
        """Run exactly `steps` supervision steps (no early halting): for the accuracy-by-steps table."""
        encoded = [self.encoder.encode(a) for a in alerts]
        out, taken = self.runner.infer(encoded, max_steps=steps, threshold=2.0)
        return [self.decoder.decide(out, i, enc, int(taken[i])) for i, enc in enumerate(encoded)]


class ThresholdedSelector:
    """A selector that abstains below `threshold` confidence (the eval's `--selector trm`).

    An abstention forced by low confidence reports 1 - confidence: the model put at most that
    much belief in "no remediation" being right.
    """

    def __init__(self, inner: TRMSelector, threshold: float | None = None) -> None:
        self.inner = inner
        self.threshold = inner.cfg.default_threshold if threshold is None else threshold

    @property
    def info(self) -> dict[str, Any]:
        return self.inner.info | {"threshold": self.threshold}

    def select_batch(self, alerts: Sequence[Mapping[str, Any]], *, max_steps: int | None = None) -> list[ModelDecision]:
        out = []
        for d in self.inner.select_batch(alerts, max_steps=max_steps):
            if d.lambda_function is not None and d.confidence < self.threshold:
                d = make_decision(None, {}, 1.0 - d.confidence, d.steps)
            out.append(d)
        return out
