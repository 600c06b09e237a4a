"""`trm-sre eval --from-store`: how shadow decisions compared with the ground truth, and the baseline to beat.

Reads a controller's store (a SQLite state directory, or `--store
postgresql://…`) while it runs, and reports, for the shadow decisions whose
comparison is final (`controller.engine.shadows`):

- the count of each agreement class, overall and per (policy, stage);
- the precision of shadow *actions*: right / (right + wrong) over every
  ground truth, and against verified outcomes only (the live trigger's
  outcome was the ground truth);
- the confidence histogram (deciles), with how many agreed and were right or
  wrong in each bucket;

and, per function, the live triggers' success rate (verified / (verified +
recurred + ineffective + failed)) next to the natural-resolution rate of
dry-run decisions that proposed the same function (resolved with no action
within `verify.windowSeconds` / judged): the baseline its success rate must
beat.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from controller.engine.store import DB_FILENAME, StoreBackend, StoreError, open_store
from controller.engine.store.shadow_sql import AGREEMENTS, NATURAL_FINAL, NaturalRow, ShadowRow, ShadowSql
from controller.engine.store.shadow_sql import ensure_schema as ensure_shadow
from controller.tools import PROG

BAD = ("recurred", "ineffective", "failed")
OUTCOME_STATES = ("verified", *BAD, "unknown", "superseded")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

EPILOG = """\
examples:
  trm-sre eval --from-store --state-dir /var/lib/trm-sre
  trm-sre eval --from-store --state-dir ./state --policy shop/restart-shadow --since 7d --json
  trm-sre eval --from-store --store postgresql://trm@db/trm --policy shop/restart

exit status: 0 a report was printed; 1 the store could not be read; 2 bad usage.
"""


def parse_duration(text: str) -> float:
    """`7d`, `12h`, `30m`, `90s` or plain seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 7d, 12h, 30m, 90s)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} eval --from-store",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from-store", action="store_true", required=True, help="read a controller's store")
    parser.add_argument("--state-dir", metavar="DIR", help="the SQLite state directory (default: the user data dir)")
    parser.add_argument("--store", metavar="URL", help="postgresql://… instead of the state directory's SQLite file")
    parser.add_argument("--policy", metavar="NS/NAME", help="only this policy (a Shadow policy, or a live one)")
    parser.add_argument(
        "--since", metavar="DURATION", type=parse_duration, help="only decisions this recent, e.g. 7d (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: list[str], stdout: TextIO | None = None, now: float | None = None) -> int:
    stdout = stdout or sys.stdout
    args = _parser().parse_args(argv)
    if args.policy is not None and "/" not in args.policy:
        print(f"{PROG} eval: error: --policy takes NAMESPACE/NAME (got {args.policy!r})", file=sys.stderr)
        return 2
    now = time.time() if now is None else now
    since = now - args.since if args.since else 0.0
    if args.store is None:
        from controller.settings import default_state_dir

        state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
        if not (state_dir / DB_FILENAME).is_file():
            print(f"{PROG} eval: error: no store in {state_dir} (is --state-dir right?)", file=sys.stderr)
            return 1
    else:
        state_dir = Path(args.state_dir or ".")
    try:
        store = open_store(args.store, state_dir)
        try:
            report = build_report(store, args.policy, since)
        finally:
            store.close()
    except StoreError as exc:
        print(f"{PROG} eval: error: cannot read the store: {exc}", file=sys.stderr)
        return 1
    report["since"] = since or None
    if args.json:
        json.dump(report, stdout, indent=2, sort_keys=True)
        stdout.write("\n")
    else:
        render(report, stdout)
    return 0


def build_report(store: StoreBackend, policy: str | None, since: float) -> dict[str, Any]:
    ensure_shadow(store)  # a store from before shadow mode: empty tables, an empty report
    with store.reading() as tx:
        sql = ShadowSql(tx)
        shadows = sql.shadows(since, policy)
        naturals = sql.naturals(since, policy)
        try:
            outcomes = sql.outcome_counts(since, policy)
        except StoreError:  # no outcomes table: nothing was ever triggered
            outcomes = []
    return {"policy": policy, "shadow": shadow_section(shadows), "functions": function_section(outcomes, naturals)}


def _precision(rows: list[ShadowRow]) -> dict[str, Any]:
    right = sum(1 for r in rows if r.function is not None and r.shadow_correct is True)
    wrong = sum(1 for r in rows if r.function is not None and r.shadow_correct is False)
    actions = sum(1 for r in rows if r.function is not None)
    return {
        "actions": actions,
        "right": right,
        "wrong": wrong,
        "unjudged": actions - right - wrong,
        "precision": round(right / (right + wrong), 4) if right + wrong else None,
    }


def _bucket(confidence: float | None) -> str:
    if confidence is None:
        return "none"
    low = min(int(confidence * 10), 9) / 10
    return f"{low:.1f}-{low + 0.1:.1f}"


def shadow_section(rows: list[ShadowRow]) -> dict[str, Any]:
    final = [r for r in rows if r.final]
    counts = dict.fromkeys(AGREEMENTS, 0)
    sources: dict[str, int] = {}
    groups: dict[tuple[str, str], list[ShadowRow]] = {}
    for r in final:
        counts[r.agreement or "both_abstain"] += 1
        sources[r.truth_source or "live"] = sources.get(r.truth_source or "live", 0) + 1
        groups.setdefault((r.policy, r.stage), []).append(r)
    histogram: dict[str, dict[str, int]] = {}
    for r in final:
        cell = histogram.setdefault(_bucket(r.confidence), {"decisions": 0, "agree": 0, "right": 0, "wrong": 0})
        cell["decisions"] += 1
        cell["agree"] += r.agreement == "agree"
        cell["right"] += r.shadow_correct is True
        cell["wrong"] += r.shadow_correct is False
    by_stage = []
    for (policy, stage), members in sorted(groups.items()):
        stage_counts = dict.fromkeys(AGREEMENTS, 0)
        for r in members:
            stage_counts[r.agreement or "both_abstain"] += 1
        by_stage.append({"policy": policy, "stage": stage, "counts": stage_counts, "precision": _precision(members)})
    return {
        "decisions": len(rows),
        "final": len(final),
        "pending": len(rows) - len(final),
        "counts": counts,
        "truth_sources": dict(sorted(sources.items())),
        "precision": _precision(final),
        "precision_vs_verified_outcomes": _precision([r for r in final if r.truth_source == "outcome"]),
        "confidence_histogram": dict(sorted(histogram.items(), key=lambda kv: (kv[0] == "none", kv[0]))),
        "by_policy_stage": by_stage,
    }


def function_section(outcomes: list[tuple[str, str, int]], naturals: list[NaturalRow]) -> list[dict[str, Any]]:
    live: dict[str, dict[str, int]] = {}
    for function, state, n in outcomes:
        live.setdefault(function, dict.fromkeys(OUTCOME_STATES, 0))[state] = n
    natural: dict[str, dict[str, int]] = {}
    for row in naturals:
        if row.state in NATURAL_FINAL:
            cell = natural.setdefault(row.function, dict.fromkeys(NATURAL_FINAL, 0))
            cell[row.state] += 1
    out = []
    for function in sorted(set(live) | set(natural)):
        counts = live.get(function, dict.fromkeys(OUTCOME_STATES, 0))
        judged = counts["verified"] + sum(counts[s] for s in BAD)
        success = round(counts["verified"] / judged, 4) if judged else None
        base = natural.get(function, dict.fromkeys(NATURAL_FINAL, 0))
        base_judged = base["resolved"] + base["still_firing"]
        rate = round(base["resolved"] / base_judged, 4) if base_judged else None
        out.append(
            {
                "function": function,
                "live": {**counts, "judged": judged, "success_rate": success},
                "natural": {**base, "judged": base_judged, "rate": rate},
                "beats_baseline": None if success is None or rate is None else success > rate,
            }
        )
    return out


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render(report: dict[str, Any], out: TextIO) -> None:
    shadow = report["shadow"]
    scope = f"policy {report['policy']}" if report["policy"] else "every policy"
    out.write(
        f"Shadow decisions ({scope}): {shadow['decisions']} recorded, {shadow['final']} final,"
        f" {shadow['pending']} waiting for their ground truth\n\n"
    )
    width = max(len(a) for a in AGREEMENTS)
    out.writelines(f"  {name:<{width}}  {shadow['counts'][name]}\n" for name in AGREEMENTS)
    sources = ", ".join(f"{k} {v}" for k, v in shadow["truth_sources"].items()) or "none yet"
    out.write(f"\n  ground truth: {sources}\n")
    for label, key in (
        ("all ground truth", "precision"),
        ("live outcomes: verified = right", "precision_vs_verified_outcomes"),
    ):
        p = shadow[key]
        out.write(
            f"  precision of shadow actions ({label}): {_rate(p['precision'])}"
            f" ({p['right']} right, {p['wrong']} wrong, {p['unjudged']} unjudged of {p['actions']})\n"
        )
    if shadow["by_policy_stage"]:
        names = [f"{g['policy']} / {g['stage']}" for g in shadow["by_policy_stage"]]
        first = max(len(n) for n in [*names, "policy / stage"])
        columns = ("agree", "dis_fn", "dis_par", "shadow_only", "live_only", "abstain")
        out.write(f"\n  {'policy / stage':<{first}}  " + "  ".join(columns) + "  precision\n")
        for name, group in zip(names, shadow["by_policy_stage"], strict=True):
            cells = "  ".join(f"{group['counts'][a]:>{len(c)}}" for a, c in zip(AGREEMENTS, columns, strict=True))
            out.write(f"  {name:<{first}}  {cells}  {_rate(group['precision']['precision']):>9}\n")
    out.write("\nConfidence histogram (final shadow decisions)\n\n  bucket     decisions  agree  right  wrong\n")
    out.writelines(
        f"  {bucket:<9}  {cell['decisions']:>9}  {cell['agree']:>5}  {cell['right']:>5}  {cell['wrong']:>5}\n"
        for bucket, cell in shadow["confidence_histogram"].items()
    )
    out.write(
        "\nPer function: live success rate vs natural resolution (dry runs: resolved with no action in the window)\n\n"
    )
    out.write("  function                      success  (judged)  natural  (judged)  beats baseline\n")
    for f in report["functions"]:
        beats = {None: "-", True: "yes", False: "NO"}[f["beats_baseline"]]
        out.write(
            f"  {f['function']:<28}  {_rate(f['live']['success_rate']):>7}  ({f['live']['judged']:>6})"
            f"  {_rate(f['natural']['rate']):>7}  ({f['natural']['judged']:>6})  {beats}\n"
        )
    if not report["functions"]:
        out.write("  (no judged triggers or dry runs yet)\n")
