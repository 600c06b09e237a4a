"""The TRM's configuration and output record, without torch: the ONNX serving path reads these too."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from models.encoding import EncoderSettings


@dataclass
class TRMConfig:
    """Every size of the model, with the reason for its value. Stored as JSON in the checkpoint."""

    # --- what the model outputs (filled from the runbook catalog; never typed by hand) ---
    functions: tuple[str, ...] = ()  # index 0 is "none" (no automated remediation), then catalog names
    pointer_params: tuple[str, ...] = ()  # parameters copied from a label slot (name, namespace, replicas, ...)
    enum_params: dict[str, tuple[str, ...]] = field(default_factory=dict)  # parameters chosen from a closed set (type)
    # --- input ---
    encoder: EncoderSettings = field(default_factory=EncoderSettings)  # sequence layout and hashing
    # --- the network ---
    feature_dim: int = 64  # hashed-feature embedding width, projected to d_model: halves the biggest table (16k x 64)
    d_model: int = (
        96  # width: 96 holds the task at ~1.3M params and keeps one supervision step a few ms on one CPU thread
    )
    n_heads: int = 4  # 32-dim heads: enough to route key/value/word information separately
    ffn_mult: int = 3  # SwiGLU hidden = 3 x d_model (cheaper than 4x, no measurable loss here)
    n_layers: int = 2  # the paper's finding: 2 layers recursed beat deeper stacks on small data
    # --- recursion (TRM) ---
    recursive: bool = True  # False = the plain-transformer baseline on the same code path
    n_latent: int = 2  # n: latent updates per recursion (paper 4-6; 2 suffices for a few-hop task, 3x cheaper)
    t_recursions: int = 2  # T: recursions per supervision step (first T-1 under no_grad)
    max_steps: int = 4  # N_sup: supervision steps in training and the cap at inference
    halt_threshold: float = 0.9  # stop early once the (raw) halting probability reaches this
    # --- confidence ---
    calib_scale: float = 1.0  # Platt scaling of the halting logit, fitted on validation after training
    calib_bias: float = 0.0
    default_threshold: float = 0.5  # the eval's own abstention threshold on calibrated confidence
    # --- decoding safety rail ---
    n_segments: int = 7  # token kinds the embedding knows (8 once the expression segment is read)
    strict_sources: bool = True  # a parameter copied from a label the catalog does not list as its source -> abstain

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["enum_params"] = {k: list(v) for k, v in self.enum_params.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TRMConfig:
        data = dict(data)
        enc = dict(data.pop("encoder", {}))
        for key in ("segment_vocab", "priority_keys"):
            enc[key] = tuple(enc.get(key, ()))
        data["functions"] = tuple(data.get("functions", ()))
        data["pointer_params"] = tuple(data.get("pointer_params", ()))
        data["enum_params"] = {k: tuple(v) for k, v in data.get("enum_params", {}).items()}
        return cls(encoder=EncoderSettings(**enc), **data)


class Outputs(NamedTuple):
    function: Any  # (B, n_functions) logits
    pointers: Any  # (B, P, S + 1) logits; index S = "absent / use the default"
    enums: Any  # (B, sum of enum sizes) logits, split per enum parameter
    halt: Any  # (B,) halting logit: "the decoded decision is exactly right"
