"""Does the recursion earn its keep? Variants at equal parameter count and training budget, on held-out SOURCES.

    python -m models.ablation train --budget 8 --out /tmp/ablation VARIANT ...   # trains each variant (models.train)
    python -m models.ablation table /tmp/ablation/* [--main models/checkpoints/trm ...] > docs/reports/ablation.md

Every variant is the same network (2 blocks, d=96, 1.30 M parameters) trained by `models.train`
with the same data, optimizer and wall-clock budget; only the recursion changes. The table
reports the held-out-source metrics (pooled over every held-out source, threshold 0.5 on
confidence calibrated leave-one-source-out, models.calibrate) and the latency p50 at batch 1
on one CPU thread over 300 held-out alerts (tokenization and validation included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, list[str]] = {
    "plain": ["--plain"],  # y = net(x), one pass
    "trm-n1-T2-N3": ["--n-latent", "1", "--t-recursions", "2", "--max-steps", "3"],  # the shipped TRM
    "trm-n1-T1-N3": ["--n-latent", "1", "--t-recursions", "1", "--max-steps", "3"],  # no no-grad recursion
    "trm-n2-T2-N1": ["--n-latent", "2", "--t-recursions", "2", "--max-steps", "1"],  # recursion, no deep supervision
    "trm-n1-T2-N1": ["--n-latent", "1", "--t-recursions", "2", "--max-steps", "1"],
}


def train(variants: list[str], budget: float, out: Path, threads: int) -> int:
    for name in variants:
        args = [
            sys.executable,
            "-m",
            "models.train",
            *VARIANTS[name],
            "--time-budget",
            str(budget),
            "--threads",
            str(threads),
            "--out",
            str(out / name / "checkpoint"),
            "--reports",
            str(out / name / "reports"),
            "--quiet",
        ]
        print(f"[ablation] {name}: {' '.join(args[2:])}", file=sys.stderr, flush=True)
        rc = subprocess.run(args, check=False).returncode
        if rc:
            return rc
    return 0


def latency_p50(checkpoint: Path, rows: list[dict[str, Any]]) -> tuple[float, float]:
    import numpy as np
    import torch

    from models.selector import TRMSelector

    torch.set_num_threads(1)
    sel = TRMSelector.load(checkpoint)
    for r in rows[:20]:
        sel.select(r["alert"])
    times, steps = [], []
    for r in rows:
        t0 = time.perf_counter()
        d = sel.select(r["alert"])
        times.append((time.perf_counter() - t0) * 1000)
        steps.append(d.steps)
    return float(np.percentile(times, 50)), float(np.mean(steps))


def loso_metrics(checkpoint: Path) -> dict[str, float]:
    """Pooled held-out-source metrics with leave-one-source-out calibration (models.calibrate)."""
    from dataclasses import replace

    import numpy as np  # noqa: F401 - torch/numpy loaded by the selector anyway

    from models.calibrate import leave_one_source_out, raw_outputs
    from models.evaluate import compute_metrics
    from models.selector import TRMSelector
    from models.train import source_rows

    sel = TRMSelector.load(checkpoint)
    sel.model.cfg = sel.cfg = replace(sel.cfg, calib_scale=1.0, calib_bias=0.0)
    rows = source_rows("calibration") + source_rows("heldout")
    decisions, logits = raw_outputs(sel, rows)
    preds, held, _ = leave_one_source_out(rows, decisions, logits, sel.cfg.default_threshold)
    m = compute_metrics([r["expected"] for r in held], preds)
    raw = compute_metrics(
        [r["expected"] for r in held],
        [d | {"confidence": 1.0} for d, r in zip(decisions, rows) if r.get("role") == "heldout"],
    )
    return m | {"raw_action_recall": raw["action_recall"]}


def table(runs: list[Path]) -> str:
    from models.train import source_rows

    rows = source_rows("heldout")[::6][:300]
    cols = ("action_recall", "abstain_recall", "wrong_action_rate", "exact_match", "ece")
    lines = [
        "| variant | recursive | n (latent) | T (recursions) | N_sup (steps) | params | train min | optimizer steps | "
        + " | ".join(cols)
        + " | p50 ms (batch 1, 1 thread) | mean steps |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(cols) + "---|---|",
    ]
    for run in runs:
        ckpt = run / "checkpoint" if (run / "checkpoint").is_dir() else run
        meta = json.loads((ckpt / "config.json").read_text())
        cfg, tr = meta["model"], meta["training"]
        m = loso_metrics(ckpt)
        p50, steps = latency_p50(ckpt, rows)
        lines.append(
            f"| {run.name} | {cfg['recursive']} | {cfg['n_latent'] if cfg['recursive'] else '—'} | "
            f"{cfg['t_recursions'] if cfg['recursive'] else '—'} | {cfg['max_steps']} | {meta['parameters']:,} | "
            f"{tr['seconds'] / 60:.1f} | {tr['optimizer_steps']} | "
            + " | ".join(f"{m.get(c, float('nan')):.4f}" for c in cols)
            + f" | {p50:.2f} | {steps:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.ablation", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    tr.add_argument("--budget", type=float, default=8.0, help="minutes of training per variant")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--threads", type=int, default=1)
    tb = sub.add_parser("table")
    tb.add_argument("runs", nargs="+", type=Path, help="ablation run dirs or checkpoint dirs")
    args = parser.parse_args(argv)
    if args.command == "train":
        return train(args.variants, args.budget, args.out, args.threads)
    print(table(args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
