"""What training optimises: the targets of a batch, the deep-supervision loss, the EMA and the schedule.

Used by `models.train` (and its tests); everything here is torch, nothing does I/O.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from models.encoding import AlertEncoder, EncodedAlert
from models.model import TRM, Batch, Outputs, TRMConfig
from models.selector import to_batch
from runbooks import Catalog


class Targets(NamedTuple):
    function: torch.Tensor  # (N,) function index, 0 = none
    ptr_ok: torch.Tensor  # (N, P, S + 1) bool: pointer choices that copy the right value (S = absent)
    ptr_active: torch.Tensor  # (N, P) bool: the target function has this parameter
    enums: torch.Tensor  # (N, E) enum value index, -1 = not applicable


def make_targets(
    rows: Sequence[dict[str, Any]], encoded: Sequence[EncodedAlert], cfg: TRMConfig, catalog: Catalog
) -> Targets:
    N, P, S = len(rows), len(cfg.pointer_params), cfg.encoder.max_labels
    fn = torch.zeros(N, dtype=torch.long)
    ok = torch.zeros(N, P, S + 1, dtype=torch.bool)
    active = torch.zeros(N, P, dtype=torch.bool)
    enum_names = list(cfg.enum_params)
    en = torch.full((N, max(1, len(enum_names))), -1, dtype=torch.long)
    for i, (row, enc) in enumerate(zip(rows, encoded)):
        t = row["target"]
        name = t["lambda_function"]
        if name is None:
            continue
        fn[i] = cfg.functions.index(name)
        labels = row["alert"]["labels"]
        for param in catalog.get(name).parameters:
            if param.name in cfg.enum_params:
                en[i, enum_names.index(param.name)] = cfg.enum_params[param.name].index(t["enums"][param.name])
                continue
            p = cfg.pointer_params.index(param.name)
            key = t["pointers"].get(param.name)
            if key is None:
                ok[i, p, S] = True
            else:
                value = labels[key]
                for j, v in enumerate(enc.slot_values):
                    if type(v) is type(value) and v == value:
                        ok[i, p, j] = True
            active[i, p] = bool(ok[i, p].any())
    return Targets(fn, ok, active, en)


def encode_rows(rows: Sequence[dict[str, Any]], cfg: TRMConfig, catalog: Catalog) -> tuple[Batch, Targets]:
    encoder = AlertEncoder(cfg.encoder)
    encoded = [encoder.encode(r["alert"]) for r in rows]
    return to_batch(encoded, cfg), make_targets(rows, encoded, cfg, catalog)


def index_batch(batch: Batch, targets: Targets, idx: torch.Tensor) -> tuple[Batch, Targets]:
    return Batch(*(t[idx] for t in batch)), Targets(*(t[idx] for t in targets))


def loss_and_stats(out: Outputs, t: Targets, cfg: TRMConfig) -> tuple[torch.Tensor, dict[str, float]]:
    B = out.function.shape[0]
    fn_loss = F.cross_entropy(out.function, t.function)
    logp = out.pointers.float().log_softmax(-1)  # (B, P, S+1)
    ok_logp = torch.logsumexp(logp.masked_fill(~t.ptr_ok, float("-inf")), dim=-1)  # (B, P)
    ptr_loss = -torch.where(t.ptr_active, ok_logp, torch.zeros_like(ok_logp)).sum() / B
    enum_loss = out.function.new_zeros(())
    enum_good = torch.ones(B, dtype=torch.bool)
    off = 0
    for e, values in enumerate(cfg.enum_params.values()):
        logits, tgt = out.enums[:, off : off + len(values)], t.enums[:, e]
        off += len(values)
        applies = tgt >= 0
        if applies.any():
            enum_loss = enum_loss + F.cross_entropy(logits[applies], tgt[applies], reduction="sum") / B
        enum_good &= ~applies | (logits.argmax(-1) == tgt.clamp(min=0))
    with torch.no_grad():
        fn_good = out.function.argmax(-1) == t.function
        chosen = out.pointers.argmax(-1, keepdim=True)  # (B, P, 1)
        ptr_good = (t.ptr_ok.gather(-1, chosen).squeeze(-1) | ~t.ptr_active).all(-1)
        correct = fn_good & ptr_good & enum_good
    halt_loss = F.binary_cross_entropy_with_logits(out.halt, correct.float())
    loss = fn_loss + ptr_loss + enum_loss + 0.5 * halt_loss
    stats = {
        "loss": loss.item(),
        "fn_loss": fn_loss.item(),
        "ptr_loss": ptr_loss.item(),
        "enum_loss": float(enum_loss.detach()),
        "halt_loss": halt_loss.item(),
        "exact": correct.float().mean().item(),
        "fn_acc": fn_good.float().mean().item(),
        "halt_acc": ((out.halt > 0) == correct).float().mean().item(),
    }
    return loss, stats


class EMA:
    """Exponential moving average of the weights; the EMA copy is what gets evaluated and saved."""

    def __init__(self, model: TRM, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: TRM) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1.0 - self.decay)


def make_optimizer(model: TRM, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "features" not in name else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )


def lr_at(progress: float, warmup: float, peak: float) -> float:
    """Linear warm-up then cosine decay to 5%, on progress in [0, 1] (steps done, or time used if larger)."""
    if progress < warmup:
        return peak * max(progress, 1e-3) / warmup
    t = min(1.0, (progress - warmup) / max(1e-9, 1 - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def deep_supervision_batch(
    model: TRM,
    opt: torch.optim.Optimizer,
    ema: EMA,
    batch: Batch,
    tgt: Targets,
    *,
    explore: float,
    before_step: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """One batch of deep supervision: up to `max_steps` optimizer steps with the (y, z) carry detached between
    them; the stats of each step, in order. `before_step` runs before each optimizer step (the LR schedule).

    ACT as in the paper: examples whose halting head says "done" leave the batch (a random `explore` share
    stays to keep training later steps), so compute goes to the examples that need it. Shared by
    `models.train` (from scratch) and `models.finetune` (feedback), so both optimise the same objective.
    """
    cfg = model.cfg
    carry = model.initial_carry(torch.zeros(len(tgt.function), cfg.encoder.seq_len, cfg.d_model))
    done: list[dict[str, float]] = []
    for sup in range(cfg.max_steps):
        if before_step is not None:
            before_step()
        mask = model.attention_mask(batch)
        x = model.embed(batch)
        carry, out = model.step(x, carry, batch, mask)
        loss, stats = loss_and_stats(out, tgt, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        done.append(stats | {"sup_step": sup + 1, "size": len(tgt.function)})
        keep = (torch.sigmoid(out.halt.detach()) < cfg.halt_threshold) | (torch.rand(len(tgt.function)) < explore)
        if sup + 1 < cfg.max_steps:
            if int(keep.sum()) < 2:
                break
            batch, tgt = Batch(*(t[keep] for t in batch)), Targets(*(t[keep] for t in tgt))
            carry = (carry[0][keep], carry[1][keep])
    return done


class LRSchedule:
    """Sets the learning rate before each optimizer step: `lr_at` of max(steps done, time used) progress."""

    def __init__(self, opt: torch.optim.Optimizer, total_steps: int, peak: float, budget_s: float) -> None:
        self.opt, self.total, self.peak, self.budget_s = opt, max(1, total_steps), peak, budget_s
        self.warmup = min(200, max(1, self.total // 20))
        self.steps, self.started = 0, time.time()
        self.lrs: list[float] = []  # the rate of each step, in order

    def __call__(self) -> None:
        progress = max(self.steps / self.total, (time.time() - self.started) / self.budget_s)
        lr = lr_at(progress, self.warmup / self.total, self.peak)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.steps += 1
        self.lrs.append(lr)
