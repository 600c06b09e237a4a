"""Export a checkpoint to ONNX: model.onnx beside model.safetensors (needs the `train` extra: torch, onnx).

    python -m models.export                          # models/checkpoints/trm and models/checkpoints/plain
    trm-sre export --checkpoint DIR [DIR ...]

The graph is one supervision step (see `models.runtime`); the halting loop runs in numpy around it. The
file describes itself like the safetensors checkpoint (ONNX metadata: catalog hash, data version, code
version, source hash, the sha256 of the weights it came from, the initial carry), and the ONNX loader
refuses it against another catalog or other weights. After exporting, the ONNX step is checked against
the torch step on a few encoded alerts (max |difference| <= 1e-4) or the export fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.encoding import AlertEncoder
from models.model import TRM, Batch
from models.runtime import INPUTS, OUTPUTS, file_sha256, stack
from models.selector import DEFAULT_CHECKPOINT_DIR, MODEL_FILE, ONNX_FILE, read_checkpoint
from runbooks import Catalog, default_catalog

OPSET = 18
SAMPLE_ALERTS = (
    {"labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "api-7d9f-x2", "container": "api"}},
    {
        "labels": {"alertname": "KubeDeploymentReplicasMismatch", "namespace": "web", "deployment": "front"},
        "annotations": {"summary": "Deployment web/front has not matched the expected number of replicas"},
    },
    {"labels": {"alertname": "Watchdog"}},
)


class Step(nn.Module):
    """One supervision step from the raw inputs: embed, recurse, heads (the exported graph)."""

    def __init__(self, model: TRM) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats, segments, positions, slot_mask, y, z):
        batch = Batch(feats, segments, positions, slot_mask)
        x = self.embed(batch)
        (y, z), out = self.model.step(x, (y, z), batch, self.model.attention_mask(batch))
        return y, z, out.function, out.pointers, out.enums, out.halt

    def embed(self, batch: Batch) -> torch.Tensor:
        """AlertEmbedding.forward with the bag written as gather + masked mean: the exporter lowers
        EmbeddingBag to a Loop over bags (SequenceEmpty/Insert), which made the step 3x slower than torch."""
        e = self.model.embed
        present = (batch.feats != 0).unsqueeze(-1).to(e.features.weight.dtype)  # (B, L, F, 1); padding_idx=0
        summed = (e.features.weight[batch.feats] * present).sum(dim=2)  # (B, L, Fd)
        bag = summed / present.sum(dim=2).clamp(min=1.0)  # mean over present features; an empty bag is 0
        content = e.content_norm(e.project(bag))
        return e.norm(content + e.segment(batch.segments) + e.position(batch.positions))


def sample_inputs(model: TRM) -> tuple[torch.Tensor, ...]:
    encoder = AlertEncoder(model.cfg.encoder)
    arrays = stack([encoder.encode(a) for a in SAMPLE_ALERTS], model.cfg)
    feats, segments, positions, slot_mask = (torch.from_numpy(a) for a in arrays)
    y, z = model.initial_carry(model.embed(Batch(feats, segments, positions, slot_mask)))
    return feats, segments, positions, slot_mask, y, z


def export_onnx(directory: Path, catalog: Catalog | None = None, *, tolerance: float = 1e-4) -> Path:
    import onnx

    catalog = catalog or default_catalog()
    cfg, meta, state = read_checkpoint(directory, catalog)
    model = TRM(cfg)
    model.load_state_dict(state, strict=True)
    model.eval()
    step = Step(model).eval()
    inputs = sample_inputs(model)
    path = directory / ONNX_FILE
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = {name: {0: batch} for name in INPUTS}
    with torch.no_grad():
        program = torch.onnx.export(
            step,
            inputs,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    described = {
        "catalog_hash": catalog.hash,
        "data_version": str(meta.get("data_version")),
        "code_version": str(meta.get("code_version")),
        "source_hash": str(meta.get("source_hash", "")),
        "weights_sha256": file_sha256(directory / MODEL_FILE),
        "parameters": str(model.num_parameters()),
        "recursive": json.dumps(cfg.recursive),
        "y_init": json.dumps([float(v) for v in model.y_init.tolist()]),
        "z_init": json.dumps([float(v) for v in model.z_init.tolist()]),
    }
    if isinstance(meta.get("feedback"), dict):  # fine-tuned on feedback (models.finetune): which file
        described["feedback_sha256"] = str(meta["feedback"].get("sha256", ""))
    del proto.metadata_props[:]
    for key, value in described.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "trm-sre"
    onnx.checker.check_model(proto)
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(proto, str(tmp))
    check_parity(step, inputs, tmp, tolerance)
    tmp.replace(path)
    return path


def check_parity(step: Step, inputs: tuple[torch.Tensor, ...], path: Path, tolerance: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = [t.numpy() for t in step(*inputs)]
    got = session.run(None, {n: t.numpy() for n, t in zip(INPUTS, inputs, strict=True)})
    worst = 0.0
    for name, a, b in zip(OUTPUTS, expected, got, strict=True):
        finite = np.isfinite(a)
        if not np.array_equal(finite, np.isfinite(b)) or not np.array_equal(a[~finite], b[~finite]):
            raise RuntimeError(f"ONNX export of {path}: output {name} differs in its infinities from torch")
        diff = float(np.max(np.abs(a[finite] - b[finite]))) if finite.any() else 0.0
        worst = max(worst, diff)
        if diff > tolerance:
            raise RuntimeError(f"ONNX export of {path}: output {name} differs from torch by {diff:.2e} > {tolerance}")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trm-sre export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        nargs="+",
        default=[DEFAULT_CHECKPOINT_DIR, DEFAULT_CHECKPOINT_DIR.parent / "plain"],
        help="checkpoint directories (default: the shipped trm and plain)",
    )
    args = parser.parse_args(argv)
    status = 0
    for directory in args.checkpoint:
        try:
            path = export_onnx(Path(directory))
        except Exception as exc:  # noqa: BLE001 - report each directory
            print(f"{directory}: export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
