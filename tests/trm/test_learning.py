"""A tiny config overfits a handful of examples in seconds: the loss, targets and deep supervision work."""

from __future__ import annotations

import torch

from models.model import TRM
from models.objective import encode_rows, loss_and_stats, make_optimizer
from models.selector import TRMSelector
from models.train import build_config
from tests.trm.conftest import TINY


def test_tiny_trm_overfits_a_handful_of_examples(catalog, sample_rows):
    torch.manual_seed(0)
    rows = [r for r in sample_rows if r["expected"]["lambda_function"]][:4] + [
        r for r in sample_rows if not r["expected"]["lambda_function"]
    ][:4]
    cfg = build_config(catalog, **dict(TINY, encoder=dict(TINY["encoder"])))
    model = TRM(cfg).train()
    batch, targets = encode_rows(rows, cfg, catalog)
    opt = make_optimizer(model, 3e-3, 0.0)
    mask = model.attention_mask(batch)
    for _ in range(60):
        carry = model.initial_carry(torch.zeros(len(rows), cfg.encoder.seq_len, cfg.d_model))
        for _ in range(cfg.max_steps):  # deep supervision: one optimizer step per supervision step
            carry, out = model.step(model.embed(batch), carry, batch, mask)
            loss, stats = loss_and_stats(out, targets, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert stats["exact"] == 1.0, stats
    decisions = TRMSelector(model.eval(), catalog).select_batch([r["alert"] for r in rows])
    for d, r in zip(decisions, rows):
        assert d.lambda_function == r["expected"]["lambda_function"]
        assert d.parameters == r["expected"]["parameters"]


def test_plain_baseline_runs_on_the_same_code_path(catalog, sample_rows):
    cfg = build_config(catalog, **dict(TINY, encoder=dict(TINY["encoder"]), recursive=False, max_steps=1))
    model = TRM(cfg)
    batch, targets = encode_rows(sample_rows[:4], cfg, catalog)
    carry = model.initial_carry(torch.zeros(4, cfg.encoder.seq_len, cfg.d_model))
    _, out = model.step(model.embed(batch), carry, batch, model.attention_mask(batch))
    loss, _ = loss_and_stats(out, targets, cfg)
    loss.backward()
    assert all(
        d.steps == 1 for d in TRMSelector(model.eval(), catalog).select_batch([r["alert"] for r in sample_rows[:4]])
    )
