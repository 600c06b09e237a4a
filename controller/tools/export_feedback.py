"""`trm-sre export-feedback`: labelled examples from the store, in the dataset format the model trains on.

Which decisions give a label, and why the others give none: `controller.engine.feedback`. The row format:
`models.feedback`. What is redacted (by default): `controller.tools.feedback_redaction`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.tools import PROG

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30d, 12h, 90m)")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR", help="the store's directory (default: the user data dir)")
    parser.add_argument(
        "--store", metavar="URL", help="sqlite:///PATH or postgresql://… instead of --state-dir (PGPASSWORD)"
    )
    parser.add_argument(
        "--since", type=parse_duration, default=parse_duration("30d"), help="decisions this recent (default 30d)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.jsonl", help="where the examples go")
    parser.add_argument(
        "--no-redact",
        action="store_true",
        help="keep annotation text, address- and secret-like label values and the generator URL as stored",
    )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_export_feedback(args: argparse.Namespace) -> int:
    from controller.engine.feedback import labels_since
    from controller.engine.store import StoreError, open_store
    from controller.settings import default_state_dir

    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    if not args.store and not state_dir.is_dir():
        print(f"{PROG} export-feedback: error: no state directory {state_dir}", file=sys.stderr)
        return 2
    try:
        store = open_store(args.store, state_dir)
        try:
            found = labels_since(store, time.time() - args.since)
        finally:
            store.close()
    except StoreError as exc:
        print(f"{PROG} export-feedback: error: {exc}", file=sys.stderr)
        return 1
    rows, unusable = examples(found.labels, redact=not args.no_redact)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
    from models.feedback import counts

    summary = counts(rows) | {"skipped": dict(sorted((found.skipped | unusable).items()))}
    summary |= {"redacted": not args.no_redact, "out": str(args.out)}
    print(json.dumps(summary, indent=2))
    return 0


def examples(labels: list[Any], *, redact: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Dataset rows of the labels, and how many labels could not become one (by why)."""
    from controller.tools.feedback_redaction import Redactor, without_label_annotations
    from models.feedback import feedback_row, public_vocabulary
    from runbooks import default_catalog

    catalog = default_catalog()
    redactor = Redactor(public_vocabulary()) if redact else None
    rows: list[dict[str, Any]] = []
    unusable: dict[str, int] = {}
    for label in labels:
        alert = without_label_annotations(label.alert)
        parameters = label.parameters
        if redactor is not None:
            alert = redactor.alert(alert)
            kept = set((alert.get("labels") or {}).values())
            parameters = {k: v if v in kept else redactor.parameters({k: v})[k] for k, v in parameters.items()}
        provenance = {
            "decision_id": label.decision_id,
            "source": label.source,
            "policy": label.policy,
            "labelled_at": iso(label.labelled_at),
        }
        row, why = feedback_row(
            alert, label.function, parameters, catalog, timestamp=iso(label.decided_at), provenance=provenance
        )
        if row is None:
            key = f"{label.source}: {why}"
            unusable[key] = unusable.get(key, 0) + 1
            continue
        rows.append(row)
    return rows, unusable
