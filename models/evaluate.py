"""Evaluate a selector on a labelled JSONL dataset (the fixed interface other components use).

    python -m models.evaluate eval DATASET.jsonl --selector trm|<extra> [--json] [--predictions OUT.jsonl]
                                              [--batch-size N]
    python -m models.evaluate compare DATASET.jsonl [DATASET2.jsonl ...] [--selectors trm,plain,original-rules]
                                              [--markdown]
    python -m models.evaluate steps DATASET.jsonl        # accuracy by number of supervision steps, mean halting step
    python -m models.evaluate eval DATASET.jsonl --by-family  # plus one row per alert family (pods, flux, storage, ...)
    python -m models.evaluate eval models/datasets/sources --by-source --batch-size 64  # one row per source repository

Input line: {"alert": <Alertmanager v4 alert>, "expected": {"lambda_function": name|null, "parameters": {...}}, ...}.
`--predictions` writes, per input line and in order:
    {"lambda_function": ..., "parameters": {...}, "confidence": 0..1, "latency_ms": float}
A selector is any object with `select_batch(alerts) -> [obj with lambda_function, parameters, confidence]`.
Built-in selectors: `trm` (the committed checkpoint with its own default threshold), `trm-raw`
(no threshold), `plain` (the same-size plain transformer baseline, models/checkpoints/plain),
`original-rules` (the ORIGINAL system's substring rules, models/baselines.py).
Latency is the wall time of the `select_batch` call that produced the decision (tokenization
included), i.e. per decision at the default batch size 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models.progress import Progress

MIN_CONFIDENCE = 0.8  # the sample policies' minConfidence: precision is reported at and above it
N_BINS = 10
#: The metrics a report shows for each model and dataset, in order.
HEADLINE_METRICS = (
    "n",
    "exact_match",
    "function_accuracy",
    "action_recall",
    "abstain_recall",
    "wrong_action_rate",
    "wrong_parameters_rate",
    "ece",
    "precision_at_min_confidence",
    "automated_recall",
)


# ---------------------------------------------------------------------------------------------
# Metrics: a pure function of (expected, predicted) pairs
# ---------------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    return a == b or (a is not None and b is not None and str(a) == str(b))


def is_exact(expected: Mapping[str, Any], predicted: Mapping[str, Any]) -> bool:
    """Function equal, and every expected parameter present with an equal value."""
    if expected.get("lambda_function") != predicted.get("lambda_function"):
        return False
    if expected.get("lambda_function") is None:
        return True
    got = predicted.get("parameters") or {}
    return all(k in got and _same(v, got[k]) for k, v in (expected.get("parameters") or {}).items())


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = N_BINS) -> float:
    """Equal-width bins over [0, 1]; sum over bins of (bin share) x |accuracy - mean confidence|."""
    n = len(confidences)
    if n == 0:
        return 0.0
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidences) if (lo <= c < hi) or (b == bins - 1 and c == 1.0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidences[i] for i in idx) / len(idx)
            total += len(idx) / n * abs(acc - conf)
    return total


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def compute_metrics(
    expected: Sequence[Mapping[str, Any]],
    predicted: Sequence[Mapping[str, Any]],
    latencies_ms: Sequence[float] | None = None,
    min_confidence: float = MIN_CONFIDENCE,
) -> dict[str, Any]:
    """All eval metrics. `expected`/`predicted`: dicts with lambda_function, parameters (+ confidence for predicted).

    - function_accuracy: predicted function == expected function (None == None counts)
    - exact_match: function equal and every expected parameter equal
    - action_recall: among examples expecting an action, the share decided exactly right
    - abstain_recall: among examples expecting no action, the share where no action was picked
    - wrong_action_rate: share of ALL examples where a function was picked that is not the expected one
      (including when none was expected)
    - wrong_parameters_rate: share of all examples with the right function but a wrong parameter
    - ece: expected calibration error of `confidence` against exact_match
    - precision_at_min_confidence: exact-match rate among *actions* (function not None) with
      confidence >= min_confidence
    - automated_recall: among examples expecting an action, the share decided exactly right with
      confidence >= min_confidence
    """
    n = len(expected)
    assert len(predicted) == n, "one prediction per expected example"
    exact = [is_exact(e, p) for e, p in zip(expected, predicted)]
    fn_ok = [e.get("lambda_function") == p.get("lambda_function") for e, p in zip(expected, predicted)]
    conf = [float(p.get("confidence") or 0.0) for p in predicted]
    want_action = [e.get("lambda_function") is not None for e in expected]
    picked = [p.get("lambda_function") is not None for p in predicted]
    n_action = sum(want_action)
    n_abstain = n - n_action
    wrong_action = [pk and not f for pk, f in zip(picked, fn_ok)]
    wrong_params = [f and not x for f, x in zip(fn_ok, exact)]
    confident_actions = [i for i in range(n) if picked[i] and conf[i] >= min_confidence]
    confident_all = [i for i in range(n) if conf[i] >= min_confidence]
    lat = list(latencies_ms or [])

    def share(flags: Sequence[bool], denom: int) -> float:
        return sum(flags) / denom if denom else 0.0

    return {
        "n": n,
        "n_expected_action": n_action,
        "n_expected_abstain": n_abstain,
        "function_accuracy": share(fn_ok, n),
        "exact_match": share(exact, n),
        "action_recall": share([x for x, w in zip(exact, want_action) if w], n_action),
        "action_function_recall": share([f for f, w in zip(fn_ok, want_action) if w], n_action),
        "abstain_recall": share([not pk for pk, w in zip(picked, want_action) if not w], n_abstain),
        "wrong_action_rate": share(wrong_action, n),
        "wrong_parameters_rate": share(wrong_params, n),
        "ece": expected_calibration_error(conf, exact),
        "min_confidence": min_confidence,
        "precision_at_min_confidence": share([exact[i] for i in confident_actions], len(confident_actions)),
        "automated_recall": share(
            [picked[i] and exact[i] and conf[i] >= min_confidence for i in range(n) if want_action[i]], n_action
        ),
        "precision_all_at_min_confidence": share([exact[i] for i in confident_all], len(confident_all)),
        "mean_confidence": sum(conf) / n if n else 0.0,
        "latency_ms": {
            "p50": _percentile(lat, 50),
            "p99": _percentile(lat, 99),
            "mean": sum(lat) / len(lat) if lat else 0.0,
        },
    }


# ---------------------------------------------------------------------------------------------
# Running a selector over a dataset
# ---------------------------------------------------------------------------------------------
def load_dataset(path: Path) -> list[dict[str, Any]]:
    """One JSONL file, or every *.jsonl of a directory (sorted by name)."""
    if Path(path).is_dir():
        return [row for f in sorted(Path(path).glob("*.jsonl")) for row in load_dataset(f)]
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                row = json.loads(line)
                if "alert" not in row or "expected" not in row:
                    raise ValueError(f"{path}:{n}: each line needs 'alert' and 'expected'")
                rows.append(row)
    return rows


def _as_dict(decision: Any) -> dict[str, Any]:
    if isinstance(decision, Mapping):
        get = decision.get
    else:

        def get(k: str, default: Any = None) -> Any:
            return getattr(decision, k, default)

    conf = get("confidence", 0.0)
    return {
        "lambda_function": get("lambda_function"),
        "parameters": dict(get("parameters") or {}),
        "confidence": float(conf) if conf is not None else 0.0,
    }


def run_selector(
    selector: Any,
    rows: Sequence[Mapping[str, Any]],
    batch_size: int = 1,
    progress: Progress | None = None,
    **select_kwargs: Any,
) -> tuple[list[dict[str, Any]], list[float]]:
    preds: list[dict[str, Any]] = []
    lats: list[float] = []
    for start in range(0, len(rows), batch_size):
        alerts = [r["alert"] for r in rows[start : start + batch_size]]
        t0 = time.perf_counter()
        decisions = selector.select_batch(alerts, **select_kwargs)
        ms = (time.perf_counter() - t0) * 1000.0
        preds += [_as_dict(d) for d in decisions]
        lats += [ms] * len(alerts)
        if progress is not None:
            progress.update(len(alerts))
    return preds, lats


def evaluate_rows(
    selector: Any, rows: Sequence[Mapping[str, Any]], batch_size: int = 1, **kw: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], list[float]]:
    preds, lats = run_selector(selector, rows, batch_size, **kw)
    metrics = compute_metrics([r["expected"] for r in rows], preds, lats)
    total_s = sum(lats[::batch_size]) / 1000.0 if batch_size > 0 else 0.0
    metrics["throughput_per_s"] = len(rows) / total_s if total_s > 0 else 0.0
    metrics["batch_size"] = batch_size
    return metrics, preds, lats


def builtin_selectors() -> dict[str, Callable[[], Any]]:
    def trm() -> Any:
        from models.selector import ThresholdedSelector, TRMSelector

        return ThresholdedSelector(TRMSelector.load())

    def trm_raw() -> Any:
        from models.selector import TRMSelector

        return TRMSelector.load()

    def plain() -> Any:
        from models.selector import (
            DEFAULT_CHECKPOINT_DIR,
            ThresholdedSelector,
            TRMSelector,
        )

        return ThresholdedSelector(TRMSelector.load(DEFAULT_CHECKPOINT_DIR.parent / "plain"))

    def original_rules() -> Any:
        from models.baselines import OriginalSubstringRules

        return OriginalSubstringRules()

    return {"trm": trm, "trm-raw": trm_raw, "plain": plain, "original-rules": original_rules}


def fmt(x: float) -> str:
    return f"{x:.4f}"


def _compare(
    paths: Sequence[Path],
    names: Sequence[str],
    factories: Mapping[str, Callable[[], Any]],
    markdown: bool,
    batch_size: int,
    quiet: bool = False,
) -> int:
    cols = [
        "exact_match",
        "function_accuracy",
        "action_recall",
        "abstain_recall",
        "wrong_action_rate",
        "wrong_parameters_rate",
        "ece",
        "precision_at_min_confidence",
        "automated_recall",
    ]
    selectors = {name: factories[name]() for name in names}
    results = {}
    for path in paths:
        rows = load_dataset(path)
        for name, sel in selectors.items():
            with Progress(len(rows), f"{path.name} {name}", unit="alert", quiet=quiet) as bar:
                metrics, _, _ = evaluate_rows(sel, rows, batch_size, progress=bar)
            results[(path.name, name)] = metrics
    if markdown:
        print("| dataset | selector | " + " | ".join(cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for (ds, name), m in results.items():
            print(f"| {ds} | {name} | " + " | ".join(fmt(m[c]) for c in cols) + " |")
    else:
        print(json.dumps({f"{ds}:{name}": m for (ds, name), m in results.items()}, indent=2))
    return 0


def steps_table(
    selector: Any, rows: Sequence[Mapping[str, Any]], max_steps: int, batch_size: int = 256
) -> dict[str, Any]:
    """Exact match when forced to run exactly k steps (no early halting), and under normal halting."""
    inner = getattr(selector, "inner", selector)
    expected = [r["expected"] for r in rows]
    table = []
    hard = [i for i, r in enumerate(rows) if r.get("situation") in _HARD_SITUATIONS]
    for k in range(1, max_steps + 1):
        decisions = []
        for s in range(0, len(rows), batch_size):
            decisions += inner.select_batch_forced([r["alert"] for r in rows[s : s + batch_size]], steps=k)
        preds = [_as_dict(d) for d in decisions]
        m = compute_metrics(expected, preds)
        hard_exact = sum(is_exact(expected[i], preds[i]) for i in hard) / len(hard) if hard else 0.0
        table.append(
            {
                "steps": k,
                "exact_match": m["exact_match"],
                "wrong_action_rate": m["wrong_action_rate"],
                "ece": m["ece"],
                "exact_match_hard": hard_exact,
            }
        )
    decisions = []
    for s in range(0, len(rows), batch_size):
        decisions += inner.select_batch([r["alert"] for r in rows[s : s + batch_size]])
    steps = [d.steps for d in decisions]
    hist = {k: steps.count(k) for k in sorted(set(steps))}
    return {
        "forced": table,
        "mean_halting_step": sum(steps) / len(steps),
        "halting_histogram": hist,
        "halted_exact_match": compute_metrics(expected, [_as_dict(d) for d in decisions])["exact_match"],
        "hard_situations": sorted(_HARD_SITUATIONS),
        "n_hard": len(hard),
    }


# Situations whose decision hinges on a single label or word (kind value, pod vs deployment, replica target).
_HARD_SITUATIONS = {
    "flux-generic",
    "flux-other-kind",
    "scale-request",
    "deployment-load",
    "container-resources",
    "pvc-other",
    "certificate",
    "monitoring-internals",
}


def main(argv: list[str] | None = None, extra_selectors: Mapping[str, Callable[[], Any]] | None = None) -> int:
    from models.breakdowns import (  # they build on this module
        family_breakdown,
        family_markdown,
        source_breakdown,
        source_markdown,
    )

    factories = builtin_selectors() | dict(extra_selectors or {})
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description="Evaluate remediation selectors.")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="metrics of one selector on one dataset")
    ev.add_argument("dataset", type=Path)
    ev.add_argument("--selector", default="trm", help=f"one of: {', '.join(sorted(factories))}")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--predictions", type=Path, help="write one prediction per input line (JSONL)")
    ev.add_argument("--batch-size", type=int, default=1)
    ev.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ev.add_argument(
        "--quiet", action="store_true", help="no progress bar (none anyway when stderr is not a terminal or CI is set)"
    )
    ev.add_argument(
        "--by-source",
        action="store_true",
        help="one row per source repository of the alerts (held-out sources, then calibration; JSON: by_source)",
    )
    ev.add_argument(
        "--by-family",
        action="store_true",
        help="also break the metrics down by alert family (JSON: by_family; text: a Markdown table)",
    )
    cmp_ = sub.add_parser("compare", help="side-by-side metrics of several selectors on the same data")
    cmp_.add_argument("datasets", type=Path, nargs="+")
    cmp_.add_argument("--selectors", default="trm,plain,original-rules")
    cmp_.add_argument("--markdown", action="store_true")
    cmp_.add_argument("--batch-size", type=int, default=64)
    cmp_.add_argument(
        "--quiet", action="store_true", help="no progress bar (none anyway when stderr is not a terminal or CI is set)"
    )
    st = sub.add_parser("steps", help="accuracy by number of supervision steps")
    st.add_argument("dataset", type=Path)
    st.add_argument("--selector", default="trm-raw")
    args = parser.parse_args(argv)

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "compare":
        names = [s for s in args.selectors.split(",") if s]
        unknown = [s for s in names if s not in factories]
        if unknown:
            parser.error(f"unknown selector(s) {unknown}; known: {sorted(factories)}")
        return _compare(args.datasets, names, factories, args.markdown, args.batch_size, args.quiet)
    if args.selector not in factories:
        parser.error(f"unknown selector {args.selector!r}; known: {sorted(factories)}")
    selector = factories[args.selector]()
    rows = load_dataset(args.dataset)
    if args.command == "steps":
        print(json.dumps(steps_table(selector, rows, getattr(selector, "inner", selector).cfg.max_steps), indent=2))
        return 0
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    with Progress(len(rows), f"eval {args.selector}", unit="alert", quiet=args.quiet) as bar:
        metrics, preds, lats = evaluate_rows(selector, rows, args.batch_size, progress=bar)
    metrics["selector"] = args.selector
    metrics["dataset"] = str(args.dataset)
    families = family_breakdown(rows, preds) if args.by_family else None
    if families is not None:
        metrics["by_family"] = families
    sources = source_breakdown(rows, preds) if args.by_source else None
    if sources is not None:
        metrics["by_source"] = sources
    if args.predictions:
        args.predictions.parent.mkdir(parents=True, exist_ok=True)
        with open(args.predictions, "w", encoding="utf-8") as fh:
            fh.writelines(
                json.dumps(p | {"latency_ms": round(ms, 4)}, sort_keys=True) + "\n" for p, ms in zip(preds, lats)
            )
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        for key in HEADLINE_METRICS:
            print(f"{key:30s} {metrics[key]:.4f}" if isinstance(metrics[key], float) else f"{key:30s} {metrics[key]}")
        print(f"{'latency_ms p50 / p99':30s} {metrics['latency_ms']['p50']:.2f} / {metrics['latency_ms']['p99']:.2f}")
        if families is not None:
            print()
            print(family_markdown(families))
        if sources is not None:
            print()
            print(source_markdown(sources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
