"""The Tiny Recursive Model (TRM) for alert -> remediation, nanoGPT-style: read bottom-up.

One tiny network (`n_layers`=2 transformer blocks) is applied over and over to two states of
the shape of the embedded alert: the answer `y` and a latent scratchpad `z`.

    one recursion       = n_latent x [ z <- net(z + x + y) ],  then  y <- net(y + z)
    one supervision step = t_recursions recursions: the first T-1 without gradients, the last with
    deep supervision     = up to max_steps supervision steps, each with its own loss and optimizer
                           step, carrying (y, z) detached from one step to the next

Heads read `y`: the function (catalog names + "none") and enum parameters from y[CLS]; one
pointer per copied parameter over the label slots plus an "absent / default" option; and the
halting logit from y[CLS], trained with BCE against "the whole decoded decision is exactly
right", whose (calibrated) sigmoid is the confidence. `recursive=False` turns the same code into
the plain-transformer baseline: y = net(x), one step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.config import Outputs, TRMConfig

__all__ = ["TRM", "Batch", "Outputs", "TRMConfig"]


class Batch(NamedTuple):
    feats: torch.Tensor  # (B, L, F) int64 feature ids, 0 = pad
    segments: torch.Tensor  # (B, L) int64 token kind
    positions: torch.Tensor  # (B, L) int64 position within segment
    slot_mask: torch.Tensor  # (B, S) bool, True where a label slot is filled


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, 1e-6)


class Attention(nn.Module):
    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, Dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # mask (B, 1, 1, L): padding is never attended
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class SwiGLU(nn.Module):
    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        hidden = cfg.ffn_mult * cfg.d_model
        self.w13 = nn.Linear(cfg.d_model, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)  # 2 x (B, L, hidden)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    """Post-norm transformer block (as in TRM): x = norm(x + attn(x)); x = norm(x + mlp(x))."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.attn, self.norm1 = Attention(cfg), RMSNorm(cfg.d_model)
        self.mlp, self.norm2 = SwiGLU(cfg), RMSNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.mlp(x))


class TinyNet(nn.Module):
    """The one network of the TRM: n_layers blocks, applied to (first argument + the others)."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, mask)
        return h


class AlertEmbedding(nn.Module):
    """Bag of hashed features per token + token kind + position within its segment -> x (B, L, D).

    The content (mean of the token's feature vectors, projected) is normalised on its own before
    the small kind/position embeddings are added, so at initialisation the words dominate the
    input instead of being drowned by the (shared, uninformative) kind/position vectors.
    """

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.features = nn.EmbeddingBag(cfg.encoder.buckets, cfg.feature_dim, mode="mean", padding_idx=0)
        self.project = nn.Linear(cfg.feature_dim, d, bias=False)
        self.content_norm = RMSNorm(d)
        self.segment = nn.Embedding(cfg.n_segments, d)
        self.position = nn.Embedding(32, d)
        self.norm = RMSNorm(d)
        nn.init.normal_(self.features.weight, std=1.0)
        nn.init.normal_(self.segment.weight, std=0.2)
        nn.init.normal_(self.position.weight, std=0.1)
        with torch.no_grad():
            self.features.weight[0].zero_()

    def forward(self, batch: Batch) -> torch.Tensor:
        B, L, Fn = batch.feats.shape
        bag = self.project(self.features(batch.feats.reshape(B * L, Fn))).view(B, L, -1)  # (B, L, D)
        return self.norm(self.content_norm(bag) + self.segment(batch.segments) + self.position(batch.positions))


class Heads(nn.Module):
    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        d, P = cfg.d_model, len(cfg.pointer_params)
        self.slot_start, self.n_slots = cfg.encoder.slot_start, cfg.encoder.max_labels
        self.function = nn.Linear(d, len(cfg.functions))
        self.enums = nn.Linear(d, max(1, sum(len(v) for v in cfg.enum_params.values())))
        self.slot_score = nn.Linear(d, P)  # per-slot score for each pointer parameter
        self.absent_score = nn.Linear(d, P)  # "absent / default" score, read from CLS
        self.halt = nn.Linear(d, 1)

    def forward(self, y: torch.Tensor, slot_mask: torch.Tensor) -> Outputs:
        cls = y[:, 0]  # (B, D)
        slots = y[:, self.slot_start : self.slot_start + self.n_slots]  # (B, S, D)
        scores = self.slot_score(slots).transpose(1, 2)  # (B, P, S)
        scores = scores.masked_fill(~slot_mask[:, None, :], float("-inf"))
        pointers = torch.cat([scores, self.absent_score(cls)[:, :, None]], dim=2)  # (B, P, S + 1)
        return Outputs(self.function(cls), pointers, self.enums(cls), self.halt(cls).squeeze(-1))


# ---------------------------------------------------------------------------------------------
# The TRM
# ---------------------------------------------------------------------------------------------
class TRM(nn.Module):
    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = AlertEmbedding(cfg)
        self.net = TinyNet(cfg)
        self.heads = Heads(cfg)
        # Fixed (untrained) initial answer and latent, as in the paper: only their direction matters.
        g = torch.Generator().manual_seed(0)
        self.register_buffer("y_init", torch.randn(cfg.d_model, generator=g) / math.sqrt(cfg.d_model) * 1.0)
        self.register_buffer("z_init", torch.randn(cfg.d_model, generator=g) / math.sqrt(cfg.d_model) * 1.0)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @staticmethod
    def attention_mask(batch: Batch) -> torch.Tensor:
        return (batch.segments != 0)[:, None, None, :]  # (B, 1, 1, L) True = may attend

    def initial_carry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.y_init.expand_as(x).contiguous(), self.z_init.expand_as(x).contiguous()

    def recursion(
        self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(self.cfg.n_latent):
            z = self.net(z + x + y, mask)  # refine the latent from the input and the current answer
        y = self.net(y + z, mask)  # refine the answer from the latent
        return y, z

    def step(
        self, x: torch.Tensor, carry: tuple[torch.Tensor, torch.Tensor], batch: Batch, mask: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], Outputs]:
        """One supervision step from embedded input x (B, L, D); returns the detached carry and the outputs."""
        y, z = carry
        if self.cfg.recursive:
            with torch.no_grad():
                for _ in range(self.cfg.t_recursions - 1):
                    y, z = self.recursion(x, y, z, mask)
            y, z = self.recursion(x, y, z, mask)
        else:
            y = z = self.net(x, mask)  # plain transformer: one pass, no carry used
        return (y.detach(), z.detach()), self.heads(y, batch.slot_mask)

    @torch.inference_mode()
    def infer(
        self, batch: Batch, max_steps: int | None = None, threshold: float | None = None
    ) -> tuple[Outputs, torch.Tensor]:
        """Run supervision steps until each example's halting probability reaches `threshold` (or max_steps).

        Halted examples leave the batch, so a batch of one stops as soon as it is confident.
        Returns the outputs at each example's halting step and the number of steps taken (B,).
        """
        cfg = self.cfg
        max_steps = 1 if not cfg.recursive else max(1, max_steps or cfg.max_steps)
        threshold = cfg.halt_threshold if threshold is None else threshold
        x = self.embed(batch)
        mask = self.attention_mask(batch)
        B = x.shape[0]
        carry = self.initial_carry(x)
        active = torch.arange(B, device=x.device)
        steps = torch.zeros(B, dtype=torch.long, device=x.device)
        final: list[torch.Tensor] | None = None
        for step in range(1, max_steps + 1):
            sub = Batch(*(t[active] for t in batch)) if len(active) < B else batch
            carry, out = self.step(
                x[active] if len(active) < B else x, carry, sub, mask[active] if len(active) < B else mask
            )
            if final is None:
                final = [torch.empty((B, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in out]
            done = (
                torch.sigmoid(out.halt) >= threshold
                if step < max_steps
                else torch.ones_like(out.halt, dtype=torch.bool)
            )
            idx = active[done]
            for f, t in zip(final, out):
                f[idx] = t[done]
            steps[idx] = step
            keep = ~done
            if not keep.any():
                break
            active = active[keep]
            carry = (carry[0][keep], carry[1][keep])
        assert final is not None
        return Outputs(*final), steps
