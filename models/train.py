"""Train the TRM (or the same-size plain transformer) from scratch on CPU, calibrate it, write reports.

    python -m models.train                 # the committed checkpoint: models/checkpoints/trm (~23 min on one thread)
    python -m models.train --plain         # the plain-transformer baseline: models/checkpoints/plain
    python -m models.train --smoke         # seconds; CI keeps the code path alive; writes to a temp dir only

Recipe (TRM paper, scaled down): AdamW with warm-up and cosine decay, EMA of the weights,
deep supervision = `max_steps` optimizer steps per batch with the (y, z) carry detached between
them, loss = function CE + pointer CE (any slot holding the right value counts) + enum CE +
0.5 x halting BCE against "the decoded decision is exactly right". Then Platt scaling of the
halting logit on the validation split (names never seen in training), metrics on every split,
a per-step JSONL log, a training-curve PNG and a reliability-diagram PNG in docs/reports/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import data as datagen
from models.encoding import EncoderSettings, default_priority_keys
from models.evaluate import HEADLINE_METRICS, evaluate_rows, is_exact
from models.model import TRM, TRMConfig
from models.objective import EMA, LRSchedule, deep_supervision_batch, encode_rows, index_batch, make_optimizer
from models.plots import plot_reliability, plot_training
from models.progress import Progress
from models.selector import (
    DEFAULT_CHECKPOINT_DIR,
    TRMSelector,
    save_checkpoint,
    to_batch,
)
from runbooks import Catalog, default_catalog

REPO = Path(__file__).resolve().parent.parent
REPORTS_DIR = REPO / "docs" / "reports"


def build_config(catalog: Catalog, **overrides: Any) -> TRMConfig:
    """Output vocabulary from the catalog; encoder vocabulary from the situation table."""
    from models.policy import check_against_catalog

    check_against_catalog(catalog)  # the policy table agrees with the runbooks' `when` fields
    pointer: list[str] = []
    enums: dict[str, tuple[str, ...]] = {}
    for runbook in catalog.functions:
        for p in runbook.parameters:
            if p.enum:
                enums[p.name] = tuple(p.enum)
            elif p.name not in pointer:
                pointer.append(p.name)
    enc_over = overrides.pop("encoder", {})
    enc_over = {"value_feature": True} | ENCODER_DEFAULTS | enc_over
    encoder = EncoderSettings(
        segment_vocab=datagen.segment_vocabulary(), priority_keys=default_priority_keys(catalog), **enc_over
    )
    overrides = MODEL_DEFAULTS | overrides
    return TRMConfig(
        functions=("none",) + catalog.names,
        pointer_params=tuple(pointer),
        enum_params=enums,
        encoder=encoder,
        **overrides,
    )


# What this version trains (on top of the dataclass defaults, which old checkpoints rely on):
# the expression from generatorURL, more annotation words without filler, and a recursion cheap
# enough for <= 5 ms per decision on one CPU thread (2 network passes per recursion, T=2).
ENCODER_DEFAULTS: dict[str, Any] = {"max_expr_tokens": 12, "max_annotation_words": 24, "drop_stopwords": True}
MODEL_DEFAULTS: dict[str, Any] = {"n_segments": 8, "n_latent": 1, "t_recursions": 2, "max_steps": 3}


def source_rows(role: str) -> list[dict[str, Any]]:
    """Alerts of the real-rule sources of one role (`calibration` or `heldout`), models/datasets/sources."""
    from models.evaluate import load_dataset
    from models.sources.build import SOURCES_DIR

    if not SOURCES_DIR.is_dir():
        return []
    return [r for r in load_dataset(SOURCES_DIR) if r.get("role") == role]


def fit_platt(logits: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Platt scaling: confidence = sigmoid(a * logit + b), fitted by BCE on validation."""
    x = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(correct, dtype=torch.float64)
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], lr=0.5, max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(a * x + b, y) + 1e-4 * (a - 1) ** 2
        loss.backward()
        return loss

    opt.step(closure)
    return float(a.detach()), float(b.detach())


def halting_logits(selector: TRMSelector, rows: Sequence[dict[str, Any]], batch_size: int = 256) -> np.ndarray:
    out = []
    for s in range(0, len(rows), batch_size):
        enc = [selector.encoder.encode(r["alert"]) for r in rows[s : s + batch_size]]
        o, _ = selector.model.infer(to_batch(enc, selector.cfg))
        out.append(o.halt.float().numpy())
    return np.concatenate(out)


def quick_exact(model: TRM, rows: Sequence[dict[str, Any]], catalog: Catalog) -> float:
    sel = TRMSelector(model, catalog)
    metrics, _, _ = evaluate_rows(sel, rows, batch_size=256)
    model.train()
    return metrics["exact_match"]


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--plain", action="store_true", help="train the same-size plain transformer baseline instead")
    parser.add_argument("--smoke", action="store_true", help="a few steps on tiny data, output to a temp dir (CI)")
    parser.add_argument(
        "--out", type=Path, default=None, help="checkpoint dir (default models/checkpoints/trm or /plain)"
    )
    parser.add_argument("--reports", type=Path, default=None, help=f"reports dir (default {REPORTS_DIR})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument(
        "--batches", type=int, default=1500, help="batches; each gives up to max_steps optimizer steps (TRM)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--ema", type=float, default=0.998)
    parser.add_argument("--d-model", type=int, default=96)
    parser.add_argument("--n-latent", type=int, default=None, help="ablations: latent updates per recursion")
    parser.add_argument("--t-recursions", type=int, default=None, help="ablations: recursions per supervision step")
    parser.add_argument("--max-steps", type=int, default=None, help="ablations: supervision steps (deep supervision)")
    parser.add_argument(
        "--real-share", type=float, default=0.35, help="train-source real-rule alerts added, as a share of --train-size"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (use 1 on a machine shared with other jobs)"
    )
    parser.add_argument(
        "--explore", type=float, default=0.1, help="share of halted examples kept for later supervision steps"
    )
    parser.add_argument("--eval-every", type=int, default=150, help="batches between validation checks")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=20.0,
        help="minutes; the learning-rate schedule follows max(steps, time) progress and training stops at it",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (there is none when stderr is not a terminal or CI is set)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    catalog = default_catalog()
    kind = "plain" if args.plain else "trm"
    tmp = None
    if args.smoke:
        tmp = tempfile.mkdtemp(prefix="trm-smoke-")
        out_dir = args.out or Path(tmp) / "checkpoint"
        reports = args.reports or Path(tmp) / "reports"
        args.train_size, args.batches, args.batch_size, args.eval_every = 256, 3, 16, 2
        overrides: dict[str, Any] = {"d_model": 32, "n_heads": 2, "feature_dim": 16, "encoder": {"buckets": 1024}}
        n_eval = 64
    else:
        out_dir = args.out or DEFAULT_CHECKPOINT_DIR.parent / kind
        reports = args.reports or REPORTS_DIR
        overrides = {"d_model": args.d_model}
        n_eval = None
    for key, value in (("n_latent", args.n_latent), ("t_recursions", args.t_recursions), ("max_steps", args.max_steps)):
        if value is not None:
            overrides[key] = value
    if out_dir.resolve() == DEFAULT_CHECKPOINT_DIR.resolve() and args.smoke:
        parser.error("--smoke never writes the committed checkpoint")
    if args.plain:
        overrides |= {"recursive": False, "max_steps": 1}
    cfg = build_config(catalog, **overrides)

    # --- data ---
    t0 = time.time()
    from models.sources.training import real_rows

    train_rows = datagen.generate(args.train_size, datagen.TRAIN_SEED, "train", catalog)
    train_rows += real_rows(int(args.train_size * args.real_share), datagen.TRAIN_SEED, catalog)

    def split(fname: str) -> list[dict[str, Any]]:
        n, seed, bucket = datagen.SPLITS[fname]
        return datagen.generate(n_eval or n, seed, bucket, catalog)

    val_rows = split("val.jsonl")
    test_rows = {"test-random": split("test-random.jsonl"), "test-heldout-names": split("test-heldout-names.jsonl")}
    train_batch, train_t = encode_rows(train_rows, cfg, catalog)
    print(
        f"[{kind}] data: {len(train_rows)} train, {len(val_rows)} val examples, encoded in {time.time() - t0:.1f}s",
        file=sys.stderr,
    )

    # --- model ---
    model = TRM(cfg)
    n_params = model.num_parameters()
    print(f"[{kind}] parameters: {n_params:,}", file=sys.stderr)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    ema = EMA(model, args.ema if not args.smoke else 0.5)
    n_batches = args.batches
    # The plain model takes one optimizer step per batch: give it the same number of optimizer steps.
    if not cfg.recursive:
        n_batches = args.batches * build_config(catalog).max_steps

    reports.mkdir(parents=True, exist_ok=True)
    log_path = reports / f"train-{kind}.jsonl"
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed after the training loop
    bar = Progress(n_batches, f"train {kind}", unit="batch", quiet=args.quiet)
    quiet = not bar.enabled  # without a bar, a plain line at each validation check says how far it got
    opt_step, t_start = 0, time.time()
    schedule = LRSchedule(opt, n_batches * cfg.max_steps, args.lr, 60 * args.time_budget)
    model.train()
    stopped_early = False
    for it in range(n_batches):
        idx = torch.from_numpy(rng.integers(0, len(train_rows), args.batch_size))
        batch, tgt = index_batch(train_batch, train_t, idx)
        for stats in deep_supervision_batch(model, opt, ema, batch, tgt, explore=args.explore, before_step=schedule):
            lr = schedule.lrs[opt_step]
            opt_step += 1
            log.write(
                json.dumps(
                    {
                        "kind": "train",
                        "opt_step": opt_step,
                        "batch": it,
                        "sup_step": int(stats.pop("sup_step")),
                        "size": int(stats.pop("size")),
                        "lr": round(lr, 7),
                        "elapsed_s": round(time.time() - t_start, 2),
                    }
                    | {k: round(v, 5) for k, v in stats.items()}
                )
                + "\n"
            )
        bar.update(1, loss=f"{stats['loss']:.3f}", exact=f"{stats['exact']:.3f}")
        if (it + 1) % args.eval_every == 0 or it + 1 == n_batches:
            val_exact = quick_exact(ema.shadow, val_rows[:600], catalog)
            log.write(
                json.dumps(
                    {
                        "kind": "val",
                        "opt_step": opt_step,
                        "batch": it + 1,
                        "val_exact": round(val_exact, 5),
                        "elapsed_s": round(time.time() - t_start, 2),
                    }
                )
                + "\n"
            )
            log.flush()
            if quiet:
                print(
                    f"[{kind}] batch {it + 1}/{n_batches} opt_step {opt_step} loss {stats['loss']:.4f} "
                    f"val_exact {val_exact:.4f} ({time.time() - t_start:.0f}s)",
                    file=sys.stderr,
                )
        if (time.time() - t_start) / 60 > args.time_budget:
            print(f"[{kind}] time budget of {args.time_budget} min reached after {it + 1} batches", file=sys.stderr)
            stopped_early = True
            break
    bar.close()
    log.close()
    train_seconds = time.time() - t_start

    # --- calibration on held-out SOURCES (models.calibrate): the shipped fit uses the calibration and held-out
    # sources; the held-out numbers below are leave-one-source-out (a source never calibrates its own numbers) ---
    from models.calibrate import fit_platt as fit_sources
    from models.calibrate import leave_one_source_out, raw_outputs

    final = ema.shadow
    selector = TRMSelector(final, catalog)
    calib_rows = source_rows("calibration") + source_rows("heldout")
    if n_eval:
        calib_rows = calib_rows[:: max(1, len(calib_rows) // n_eval)]
    if calib_rows:
        decisions, logits = raw_outputs(selector, calib_rows)
        correct = np.array([float(is_exact(r["expected"], d)) for r, d in zip(calib_rows, decisions)])
        a, b = fit_sources(logits, correct)
        loso_preds, loso_rows, _ = leave_one_source_out(calib_rows, decisions, logits, final.cfg.default_threshold)
    else:  # no source datasets (a bare checkout): validation names
        _, val_preds, _ = evaluate_rows(selector, val_rows, batch_size=256)
        correct = np.array([float(is_exact(r["expected"], p)) for p, r in zip(val_preds, val_rows)])
        a, b = fit_platt(halting_logits(selector, val_rows), correct)
        loso_preds, loso_rows = [], []
    final.cfg = replace(final.cfg, calib_scale=a, calib_bias=b)
    selector = TRMSelector(final, catalog)

    # --- metrics on every split ---
    from models.selector import ThresholdedSelector

    gated = ThresholdedSelector(selector)
    metrics: dict[str, Any] = {}
    curves: dict[str, tuple[list[float], list[bool]]] = {}
    for name, rows in ({"val": val_rows} | test_rows).items():
        m, preds, _ = evaluate_rows(gated, rows, batch_size=256)
        metrics[name] = {k: m[k] for k in HEADLINE_METRICS}
        curves[name] = ([p["confidence"] for p in preds], [is_exact(r["expected"], p) for r, p in zip(rows, preds)])
        print(
            f"[{kind}] {name}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics[name].items() if isinstance(v, float)),
            file=sys.stderr,
        )

    by_source: list[dict[str, Any]] = []
    if loso_rows:
        from models.breakdowns import source_breakdown
        from models.evaluate import compute_metrics

        m = compute_metrics([r["expected"] for r in loso_rows], loso_preds)
        metrics["heldout-sources"] = {k: m[k] for k in metrics["val"]} | {"calibration": "leave-one-source-out"}
        by_source = source_breakdown(loso_rows, loso_preds)
        sources = sorted({r["source"] for r in loso_rows})
        for src in sources:
            idx = [i for i, r in enumerate(loso_rows) if r["source"] == src]
            curves[src] = (
                [loso_preds[i]["confidence"] for i in idx],
                [is_exact(loso_rows[i]["expected"], loso_preds[i]) for i in idx],
            )
        plot_reliability({k: curves[k] for k in sources}, reports / f"reliability-sources-{kind}.png")
    extra = {
        "kind": kind,
        "metrics": metrics,
        "by_source": by_source,
        "training": {
            "seconds": round(train_seconds, 1),
            "batches": it + 1,
            "optimizer_steps": opt_step,
            "batch_size": args.batch_size,
            "train_examples": len(train_rows),
            "lr": args.lr,
            "ema": args.ema,
            "seed": args.seed,
            "threads": args.threads,
            "stopped_early": stopped_early,
            "real_share": args.real_share,
            "calibration": {
                "scale": a,
                "bias": b,
                "n": len(calib_rows) or len(val_rows),
                "fitted_on": "calibration sources + held-out sources" if calib_rows else "val.jsonl",
            },
        },
    }
    save_checkpoint(final, out_dir, catalog, extra)
    # model.onnx beside the weights (what the controller serves); the export checks it against torch.
    from models.export import export_onnx

    export_onnx(out_dir, catalog)
    plot_training(
        log_path,
        reports / f"training-curve-{kind}.png",
        f"{kind}: {n_params:,} params, {opt_step} optimizer steps, {train_seconds / 60:.1f} min",
    )
    plot_reliability(
        {k: curves[k] for k in ("val", "test-heldout-names", "test-random")}, reports / f"reliability-{kind}.png"
    )
    (reports / f"train-summary-{kind}.json").write_text(json.dumps({"parameters": n_params} | extra, indent=2) + "\n")
    print(
        f"[{kind}] saved {out_dir} ({sum(f.stat().st_size for f in out_dir.iterdir()) / 1e6:.2f} MB) "
        f"in {train_seconds / 60:.1f} min",
        file=sys.stderr,
    )
    if tmp:
        print(f"[{kind}] smoke run ok: outputs in {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
