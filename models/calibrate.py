"""Confidence calibration on held-out SOURCES, evaluated leave-one-source-out.

    python -m models.calibrate --checkpoint models/checkpoints/trm            # the per-source table, LOSO
    python -m models.calibrate --checkpoint models/checkpoints/trm --write    # also refit the shipped calibration

The confidence is sigmoid(a * halting_logit + b) (Platt scaling; a pure temperature is b = 0).
The calibration sources alone are too easy to fit it (the model is right on every one of their
alerts, so the maximum-likelihood fit says "always 1.0"). So:

- every held-out source S is reported with a, b fitted on the calibration sources and the OTHER
  held-out sources, never on S (leave-one-source-out): the numbers of the model card;
- the shipped checkpoint (`--write`) is fitted on the calibration sources and all held-out
  sources; its own `eval --by-source` numbers are therefore not generalization numbers for
  calibration (the decisions are the same unless a confidence crosses the threshold).

The decisions, the halting logits and the threshold (the checkpoint's `default_threshold`,
0.5) are computed once; refitting only moves confidences, and abstentions below the threshold.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.breakdowns import source_breakdown, source_markdown
from models.evaluate import compute_metrics, is_exact


def fit_platt(logits: np.ndarray, correct: np.ndarray, prior: float = 1e-3) -> tuple[float, float]:
    """confidence = sigmoid(a * logit + b), a >= 0 (a monotone map: a higher halting logit never means less
    confidence), fitted by BCE with a weak prior toward (a, b) = (1, 0). a = softplus(u)."""
    x = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(correct, dtype=torch.float64)
    u = torch.tensor(math.log(math.e - 1.0), dtype=torch.float64, requires_grad=True)  # softplus(u) = 1
    b = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([u, b], lr=0.5, max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        a = F.softplus(u)
        loss = F.binary_cross_entropy_with_logits(a * x + b, y) + prior * ((a - 1) ** 2 + b**2)
        loss.backward()
        return loss

    opt.step(closure)
    return float(F.softplus(u).detach()), float(b.detach())


def raw_outputs(
    selector: Any, rows: Sequence[dict[str, Any]], batch_size: int = 128
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Ungated decisions and halting logits of a TRMSelector, in row order (one inference pass per batch)."""
    decisions: list[dict[str, Any]] = []
    logits: list[np.ndarray] = []
    for s in range(0, len(rows), batch_size):
        encoded = [selector.encoder.encode(r["alert"]) for r in rows[s : s + batch_size]]
        out, steps = selector.runner.infer(encoded)
        for i, enc in enumerate(encoded):
            d = selector.decoder.decide(out, i, enc, int(steps[i]))
            decisions.append({"lambda_function": d.lambda_function, "parameters": d.parameters})
        logits.append(np.asarray(out.halt, dtype=np.float32))
    return decisions, np.concatenate(logits) if logits else np.zeros(0)


def gate(
    decisions: Sequence[dict[str, Any]], logits: np.ndarray, a: float, b: float, threshold: float
) -> list[dict[str, Any]]:
    """Calibrated confidence, and an abstention below the threshold (as models.selector.ThresholdedSelector)."""
    out = []
    for d, z in zip(decisions, logits):
        c = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, a * float(z) + b))))
        if d["lambda_function"] is not None and c < threshold:
            out.append({"lambda_function": None, "parameters": {}, "confidence": 1.0 - c})
        else:
            out.append(d | {"confidence": c})
    return out


def leave_one_source_out(
    rows: Sequence[dict[str, Any]], decisions: Sequence[dict[str, Any]], logits: np.ndarray, threshold: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, tuple[float, float]]]:
    """Per held-out source: gated predictions with a, b fitted without that source. Returns (predictions for the
    held-out rows, in order; their rows; the fit used per source)."""
    correct = np.array([float(is_exact(r["expected"], d)) for r, d in zip(rows, decisions)])
    heldout = sorted({r["source"] for r in rows if r.get("role") == "heldout"})
    preds: list[dict[str, Any] | None] = [None] * len(rows)
    fits: dict[str, tuple[float, float]] = {}
    for src in heldout:
        fit_idx = np.array([i for i, r in enumerate(rows) if r["source"] != src])
        a, b = fit_platt(logits[fit_idx], correct[fit_idx])
        fits[src] = (a, b)
        idx = [i for i, r in enumerate(rows) if r["source"] == src]
        for i, p in zip(idx, gate([decisions[i] for i in idx], logits[idx], a, b, threshold)):
            preds[i] = p
    keep = [i for i, p in enumerate(preds) if p is not None]
    return [preds[i] for i in keep], [rows[i] for i in keep], fits  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    from models.selector import CONFIG_FILE, DEFAULT_CHECKPOINT_DIR, TRMSelector
    from models.train import plot_reliability, source_rows

    parser = argparse.ArgumentParser(prog="python -m models.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT_DIR)
    parser.add_argument(
        "--write", action="store_true", help="refit on calibration + held-out sources and store it in the checkpoint"
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=None,
        help="write reliability-sources-<kind>.png and calibration-<kind>.json here",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    selector = TRMSelector.load(args.checkpoint)
    selector.model.cfg = replace(selector.cfg, calib_scale=1.0, calib_bias=0.0)
    selector.cfg = selector.model.cfg
    rows = source_rows("calibration") + source_rows("heldout")
    decisions, logits = raw_outputs(selector, rows)
    threshold = selector.cfg.default_threshold
    preds, held_rows, fits = leave_one_source_out(rows, decisions, logits, threshold)
    table = source_breakdown(held_rows, preds)
    m = compute_metrics([r["expected"] for r in held_rows], preds)
    kind = json.loads((args.checkpoint / CONFIG_FILE).read_text()).get("kind", args.checkpoint.name)
    print(f"{kind}: leave-one-source-out calibration, threshold {threshold}")
    print(source_markdown(table))
    result: dict[str, Any] = {
        "kind": kind,
        "protocol": "leave-one-source-out Platt scaling",
        "threshold": threshold,
        "fits": {k: {"scale": a, "bias": b} for k, (a, b) in fits.items()},
        "by_source": table,
        "pooled": {
            k: m[k] for k in ("n", "exact_match", "action_recall", "abstain_recall", "wrong_action_rate", "ece")
        },
    }
    if args.reports:
        curves = {}
        for src in sorted({r["source"] for r in held_rows}):
            idx = [i for i, r in enumerate(held_rows) if r["source"] == src]
            curves[src] = (
                [preds[i]["confidence"] for i in idx],
                [is_exact(held_rows[i]["expected"], preds[i]) for i in idx],
            )
        plot_reliability(curves, args.reports / f"reliability-sources-{kind}.png")
        (args.reports / f"calibration-{kind}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.write:
        correct = np.array([float(is_exact(r["expected"], d)) for r, d in zip(rows, decisions)])
        a, b = fit_platt(logits, correct)
        path = args.checkpoint / CONFIG_FILE
        meta = json.loads(path.read_text())
        meta["model"]["calib_scale"], meta["model"]["calib_bias"] = a, b
        meta.setdefault("training", {})["calibration"] = {
            "scale": a,
            "bias": b,
            "n": len(rows),
            "fitted_on": "calibration sources + held-out sources (models.calibrate)",
        }
        path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        print(f"wrote calibration scale {a:.4f} bias {b:.4f} to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
