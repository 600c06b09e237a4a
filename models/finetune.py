"""Fine-tune a checkpoint on feedback (`trm-sre export-feedback`), behind a no-regression gate.

    trm-sre train --feedback feedback.jsonl                      # -> models/checkpoints/trm-feedback
    python -m models.finetune --feedback feedback.jsonl --out DIR [--checkpoint DIR] [--overwrite-shipped]

1. The feedback is split by time: the most recent `--holdout-share` (20%) is held out, the rest is trained on.
2. The checkpoint (default: the shipped one) is trained briefly (`--batches`, a few minutes on 2 CPU cores) with
   the objective of `models.train` (`models.objective.deep_supervision_batch`) on batches that mix the feedback
   (`--feedback-share` of each batch) with a replay sample of the original training data (the first
   `--replay` examples of the training generator and of the train sources, the same seeds as `models.train`),
   so what it learnt before is not forgotten. Then its confidence is refitted as the shipped one was
   (Platt scaling on the calibration and held-out sources, `models.calibrate`).
3. The gate compares the new model with the old one, both with their own calibration and the checkpoint's
   threshold, on three holdouts: the held-out sources (models/datasets/sources, role heldout: rule packs never
   trained on), the held-out names (models/datasets/test-heldout-names.jsonl) and the recent feedback. It refuses
   (exit 1, nothing written, the reasons printed) when on any of them exact match drops by more than
   `--max-exact-drop`, the wrong-action rate rises by more than `--max-wrong-action-rise`, or the ECE rises
   by more than `--max-ece-rise`.
4. Otherwise it writes model.safetensors + config.json (which records the feedback file's sha256, its counts,
   the base checkpoint, the gate's numbers) and model.onnx (`models.export`, checked against torch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import data as datagen
from models.calibrate import fit_platt, gate, raw_outputs
from models.evaluate import compute_metrics, is_exact, load_dataset
from models.feedback import FeedbackError, counts, load_feedback, time_split
from models.model import TRM
from models.objective import EMA, LRSchedule, deep_supervision_batch, encode_rows, index_batch, make_optimizer
from models.runtime import file_sha256
from models.selector import DEFAULT_CHECKPOINT_DIR, MODEL_FILE, TRMSelector, read_checkpoint, save_checkpoint
from runbooks import Catalog, default_catalog

DEFAULT_OUT = DEFAULT_CHECKPOINT_DIR.parent / "trm-feedback"
GATED_METRICS = ("exact_match", "wrong_action_rate", "ece")


@dataclass(frozen=True)
class Tolerances:
    """How much worse than the base checkpoint a holdout may get (absolute, as shares: 0.005 = 0.5 points)."""

    max_exact_drop: float = 0.005
    max_wrong_action_rise: float = 0.003
    max_ece_rise: float = 0.01


def gate_failures(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], tol: Tolerances) -> list[str]:
    """Why the new model may not be written (empty: it passes). Holdouts without examples are not judged."""
    reasons = []
    for name, old in before.items():
        new = after[name]
        if not old["n"]:
            continue
        drop = old["exact_match"] - new["exact_match"]
        if drop > tol.max_exact_drop:
            reasons.append(
                f"{name}: exact match fell {old['exact_match']:.4f} -> {new['exact_match']:.4f} "
                f"(-{drop:.4f} > --max-exact-drop {tol.max_exact_drop})"
            )
        rise = new["wrong_action_rate"] - old["wrong_action_rate"]
        if rise > tol.max_wrong_action_rise:
            reasons.append(
                f"{name}: wrong-action rate rose {old['wrong_action_rate']:.4f} -> {new['wrong_action_rate']:.4f} "
                f"(+{rise:.4f} > --max-wrong-action-rise {tol.max_wrong_action_rise})"
            )
        worse = new["ece"] - old["ece"]
        if worse > tol.max_ece_rise:
            reasons.append(
                f"{name}: calibration error (ECE) rose {old['ece']:.4f} -> {new['ece']:.4f} "
                f"(+{worse:.4f} > --max-ece-rise {tol.max_ece_rise})"
            )
    return reasons


def every_kth(rows: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """At most `limit` rows spread evenly over the list (deterministic), or all of them."""
    if not limit or len(rows) <= limit:
        return rows
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


def holdouts(feedback_recent: list[dict[str, Any]], limit: int | None) -> dict[str, list[dict[str, Any]]]:
    """The three holdouts the gate judges, at most `limit` rows of each fixed one."""
    from models.sources.build import SOURCES_DIR

    names = load_dataset(datagen.DATASETS_DIR / "test-heldout-names.jsonl")
    return {
        "heldout-sources": every_kth(_source_rows(SOURCES_DIR, "heldout"), limit),
        "test-heldout-names": every_kth(names, limit),
        "feedback-recent": feedback_recent,
    }


def _source_rows(directory: Path, role: str) -> list[dict[str, Any]]:
    return [r for r in load_dataset(directory) if r.get("role") == role] if directory.is_dir() else []


Raw = tuple[list[dict[str, Any]], np.ndarray]  # ungated decisions and halting logits, in row order


def raw_by_set(model: TRM, sets: dict[str, list[dict[str, Any]]], catalog: Catalog) -> dict[str, Raw]:
    selector = TRMSelector(model.eval(), catalog)
    return {name: raw_outputs(selector, rows, batch_size=256) for name, rows in sets.items()}


def gated_metrics(
    sets: dict[str, list[dict[str, Any]]], raw: dict[str, Raw], calib: tuple[float, float], threshold: float
) -> dict[str, dict[str, Any]]:
    """Metrics per holdout with confidence = sigmoid(a * halting logit + b) and abstention below `threshold`."""
    out: dict[str, dict[str, Any]] = {}
    for name, rows in sets.items():
        if not rows:
            out[name] = {"n": 0}
            continue
        decisions, logits = raw[name]
        m = compute_metrics([r["expected"] for r in rows], gate(decisions, logits, calib[0], calib[1], threshold))
        out[name] = {k: m[k] for k in ("n", "exact_match", "action_recall", "abstain_recall", *GATED_METRICS[1:])}
    return out


def refit_calibration(fit_rows: Sequence[dict[str, Any]], raw: Raw) -> tuple[float, float]:
    """Platt scaling on what the shipped calibration was fitted on (the calibration and held-out sources)."""
    decisions, logits = raw
    correct = np.array([float(is_exact(r["expected"], d)) for r, d in zip(fit_rows, decisions)])
    return fit_platt(logits, correct)


def replay_rows(n: int, real_share: float, catalog: Catalog) -> list[dict[str, Any]]:
    """The first examples of `models.train`'s own training streams (same seeds): a sample of what it trained on."""
    from models.sources.training import real_rows

    n_real = int(n * real_share)
    return datagen.generate(n - n_real, datagen.TRAIN_SEED, "train", catalog) + real_rows(
        n_real, datagen.TRAIN_SEED, catalog
    )


def fine_tune(
    base: TRM, feedback: list[dict[str, Any]], replay: list[dict[str, Any]], catalog: Catalog, args: argparse.Namespace
) -> TRM:
    """Brief training from `base` on batches of `--feedback-share` feedback and the rest replay; the EMA copy."""
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    model = base
    model.train()
    fb_batch, fb_t = encode_rows(feedback, model.cfg, catalog)
    rp_batch, rp_t = encode_rows(replay, model.cfg, catalog)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    ema = EMA(model, args.ema)
    schedule = LRSchedule(opt, args.batches * model.cfg.max_steps, args.lr, 60 * args.time_budget)
    n_fb = max(1, round(args.batch_size * args.feedback_share))
    for it in range(args.batches):
        fb_idx = torch.from_numpy(rng.integers(0, len(feedback), n_fb))
        rp_idx = torch.from_numpy(rng.integers(0, len(replay), args.batch_size - n_fb))
        parts = [index_batch(fb_batch, fb_t, fb_idx), index_batch(rp_batch, rp_t, rp_idx)]
        batch = type(parts[0][0])(*(torch.cat(t) for t in zip(parts[0][0], parts[1][0])))
        tgt = type(parts[0][1])(*(torch.cat(t) for t in zip(parts[0][1], parts[1][1])))
        stats = deep_supervision_batch(model, opt, ema, batch, tgt, explore=args.explore, before_step=schedule)
        if (it + 1) % max(1, args.batches // 5) == 0 or it + 1 == args.batches:
            print(
                f"[finetune] batch {it + 1}/{args.batches} loss {stats[-1]['loss']:.4f} exact {stats[-1]['exact']:.3f}",
                file=sys.stderr,
            )
        if time.time() - schedule.started > 60 * args.time_budget:
            print(f"[finetune] time budget of {args.time_budget} min reached after {it + 1} batches", file=sys.stderr)
            break
    return ema.shadow


def report_table(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'holdout':<20} {'n':>5}  " + "  ".join(f"{m:>24}" for m in GATED_METRICS)]
    for name, old in before.items():
        new = after[name]
        if not old["n"]:
            lines.append(f"{name:<20} {0:>5}  (no examples: not judged)")
            continue
        cells = "  ".join(f"{old[m]:>10.4f} -> {new[m]:<10.4f}" for m in GATED_METRICS)
        lines.append(f"{name:<20} {old['n']:>5}  {cells}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Tolerances()
    parser = argparse.ArgumentParser(
        prog="trm-sre train --feedback",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument(
        "--feedback", type=Path, required=True, metavar="FILE.jsonl", help="from trm-sre export-feedback"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT_DIR,
        help="the checkpoint to start from (default: the shipped one)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where the new checkpoint goes (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--overwrite-shipped", action="store_true", help="allow --out to be the shipped checkpoint directory"
    )
    parser.add_argument(
        "--holdout-share", type=float, default=0.2, help="the most recent share of the feedback held out (default 0.2)"
    )
    gate_group = parser.add_argument_group("the no-regression gate (absolute shares; 0.005 = 0.5 points)")
    gate_group.add_argument(
        "--max-exact-drop",
        type=float,
        default=d.max_exact_drop,
        help=f"largest allowed exact-match drop on any holdout (default {d.max_exact_drop})",
    )
    gate_group.add_argument(
        "--max-wrong-action-rise",
        type=float,
        default=d.max_wrong_action_rise,
        help=f"largest allowed rise of the wrong-action rate on any holdout (default {d.max_wrong_action_rise})",
    )
    gate_group.add_argument(
        "--max-ece-rise",
        type=float,
        default=d.max_ece_rise,
        help=f"largest allowed rise of the expected calibration error on any holdout (default {d.max_ece_rise})",
    )
    train = parser.add_argument_group("training")
    train.add_argument(
        "--batches", type=int, default=60, help="batches (each up to max_steps optimizer steps; default 60)"
    )
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument(
        "--feedback-share", type=float, default=0.25, help="share of each batch drawn from the feedback (default 0.25)"
    )
    train.add_argument(
        "--replay", type=int, default=4000, help="replay sample of the original training data (default 4000)"
    )
    train.add_argument(
        "--real-share",
        type=float,
        default=0.35,
        help="share of the replay from the train sources' rules (as models.train)",
    )
    train.add_argument("--lr", type=float, default=3e-4)
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument("--ema", type=float, default=0.95)
    train.add_argument("--explore", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--time-budget", type=float, default=3.0, help="minutes of training at most (default 3)")
    train.add_argument(
        "--holdout-limit",
        type=int,
        default=None,
        help="evaluate on at most N rows of each fixed holdout, spread evenly (quick checks and tests; default all)",
    )
    train.add_argument(
        "--report", type=Path, default=None, help="also write the gate's numbers as JSON here (pass or refuse)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out.resolve() == DEFAULT_CHECKPOINT_DIR.resolve() and not args.overwrite_shipped:
        print(f"refusing to overwrite the shipped checkpoint {args.out} without --overwrite-shipped", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    catalog = default_catalog()
    try:
        rows = load_feedback(args.feedback)
    except (OSError, FeedbackError) as exc:
        print(f"cannot read the feedback: {exc}", file=sys.stderr)
        return 2
    train_rows, recent = time_split(rows, args.holdout_share)
    if not train_rows:
        print(f"{args.feedback}: no feedback to train on ({len(rows)} examples, all held out)", file=sys.stderr)
        return 2
    cfg, meta, state = read_checkpoint(args.checkpoint, catalog)
    base = TRM(cfg)
    base.load_state_dict(state, strict=True)
    sets = holdouts(recent, args.holdout_limit)
    from models.sources.build import SOURCES_DIR

    calibration_only = {"calibration-sources": every_kth(_source_rows(SOURCES_DIR, "calibration"), args.holdout_limit)}
    threshold = cfg.default_threshold
    before = gated_metrics(sets, raw_by_set(base, sets, catalog), (cfg.calib_scale, cfg.calib_bias), threshold)
    t0 = time.time()
    replay = replay_rows(args.replay, args.real_share, catalog)
    tuned = fine_tune(_copy(base, cfg), train_rows, replay, catalog, args)
    raw = raw_by_set(tuned, sets | calibration_only, catalog)
    fit_rows = calibration_only["calibration-sources"] + sets["heldout-sources"]
    fit_raw = _concat(raw["calibration-sources"], raw["heldout-sources"])
    a, b = refit_calibration(fit_rows, fit_raw) if fit_rows else (cfg.calib_scale, cfg.calib_bias)
    tuned.cfg = replace(tuned.cfg, calib_scale=a, calib_bias=b)
    after = gated_metrics(sets, raw, (a, b), threshold)
    seconds = time.time() - t0
    tol = Tolerances(args.max_exact_drop, args.max_wrong_action_rise, args.max_ece_rise)
    failures = gate_failures(before, after, tol)
    print(report_table(before, after), file=sys.stderr)
    feedback = {
        "file": args.feedback.name,
        "sha256": file_sha256(args.feedback),
        "counts": counts(rows),
        "trained_on": counts(train_rows),
        "held_out": counts(recent) | {"share": args.holdout_share, "from": recent[0]["timestamp"] if recent else None},
    }
    report = {
        "passed": not failures,
        "reasons": failures,
        "tolerances": vars(tol),
        "before": before,
        "after": after,
        "feedback": feedback,
    }
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    if failures:
        print("refused: the fine-tuned model regresses; nothing written:", file=sys.stderr)
        for reason in failures:
            print(f"  {reason}", file=sys.stderr)
        return 1
    extra = {k: v for k, v in meta.items() if k in ("kind", "training")}
    extra |= {
        "metrics": after,
        "feedback": feedback,
        "finetune": {
            "base_checkpoint": str(args.checkpoint),
            "base_weights_sha256": file_sha256(args.checkpoint / MODEL_FILE),
            "base_metrics": before,
            "tolerances": vars(tol),
            "batches": args.batches,
            "batch_size": args.batch_size,
            "feedback_share": args.feedback_share,
            "replay": len(replay),
            "lr": args.lr,
            "seed": args.seed,
            "seconds": round(seconds, 1),
            "calibration": {"scale": a, "bias": b, "fitted_on": "calibration sources + held-out sources"},
        },
    }
    save_checkpoint(tuned, args.out, catalog, extra)
    from models.export import export_onnx

    export_onnx(args.out, catalog)
    print(f"passed the gate: wrote {args.out} (feedback sha256 {feedback['sha256'][:12]})", file=sys.stderr)
    return 0


def _concat(*parts: Raw) -> Raw:
    return [d for p in parts for d in p[0]], np.concatenate([p[1] for p in parts])


def _copy(model: TRM, cfg: Any) -> TRM:
    fresh = TRM(cfg)
    fresh.load_state_dict(model.state_dict(), strict=True)
    return fresh


if __name__ == "__main__":
    raise SystemExit(main())
