"""Feedback examples: labelled alerts from the running controller, in the dataset format the model trains on.

One JSONL line per example, the same shape as `models/datasets/*.jsonl` (so `trm-sre eval FILE.jsonl` reads it)
plus two fields of its own:

    {"alert": <Alertmanager v4 alert>,
     "expected": {"lambda_function": name | null, "parameters": {...}},     # validated by the catalog
     "target": {"lambda_function": ..., "pointers": {param: label key}, "enums": {param: value}},
     "situation": "feedback",
     "timestamp": "2026-05-01T10:00:00Z",          # when the alert was decided: the time holdout sorts on it
     "provenance": {"decision_id": ..., "source": "annotation" | "approval" | "correction" | "outcome",
                    "policy": "ns/name", "labelled_at": "..."}}

The model copies parameter values from label slots, never generates them: `target.pointers` names the label each
value is copied from (one of the parameter's catalog `sources`, which the decoder insists on). An example whose
value is in no such label cannot be learned, and `feedback_row` refuses it (with the reason).

No torch here: `trm-sre export-feedback` builds rows with it on a machine without the `train` extra.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from runbooks import Catalog, InvalidCall

SOURCES = ("annotation", "approval", "correction", "outcome")
REQUIRED_FIELDS = ("alert", "expected", "target", "timestamp", "provenance")


class FeedbackError(ValueError):
    """A feedback file that is not in the format (the message names the line)."""


def feedback_row(
    alert: Mapping[str, Any],
    function: str | None,
    parameters: Mapping[str, Any],
    catalog: Catalog,
    *,
    timestamp: str,
    provenance: Mapping[str, Any],
) -> tuple[dict[str, Any] | None, str]:
    """The example for `alert` labelled (function, parameters), or (None, why it cannot be learned)."""
    if provenance.get("source") not in SOURCES:
        raise ValueError(f"provenance source must be one of {SOURCES}, not {provenance.get('source')!r}")
    row = {"alert": dict(alert), "situation": "feedback", "timestamp": timestamp, "provenance": dict(provenance)}
    if function is None:
        none = {"lambda_function": None, "parameters": {}}
        return row | {"expected": none, "target": {"lambda_function": None, "pointers": {}, "enums": {}}}, ""
    runbook = catalog.get(function)
    if runbook is None:
        return None, f"{function} is not in the runbook catalog"
    try:
        clean = catalog.validate_call(function, dict(parameters))
    except InvalidCall:
        return None, f"the call is invalid for the {function} runbook"
    labels = alert.get("labels") or {}
    pointers: dict[str, str] = {}
    enums: dict[str, str] = {}
    for param in runbook.parameters:
        if param.enum:
            if param.name in clean:
                enums[param.name] = str(clean[param.name])
            continue
        if param.name not in parameters:
            continue  # absent, or the catalog's default: the model learns "no slot" and the default fills it
        value = str(clean[param.name])
        keys = param.sources or tuple(labels)
        key = next((k for k in keys if k in labels and str(labels[k]) == value), None)
        if key is None:
            return None, f"{function} {param.name} is in no label the model may copy it from ({', '.join(keys)})"
        pointers[param.name] = key
    target = {"lambda_function": function, "pointers": pointers, "enums": enums}
    return row | {"expected": {"lambda_function": function, "parameters": clean}, "target": target}, ""


def load_feedback(path: Path) -> list[dict[str, Any]]:
    """The rows of a feedback file, checked for the fields training needs; FeedbackError names a bad line."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise FeedbackError(f"{path}:{n}: not JSON: {exc}") from exc
            missing = [f for f in REQUIRED_FIELDS if not isinstance(row, dict) or f not in row]
            if missing:
                raise FeedbackError(f"{path}:{n}: missing {', '.join(missing)}")
            if row["provenance"].get("source") not in SOURCES:
                raise FeedbackError(f"{path}:{n}: provenance.source must be one of {', '.join(SOURCES)}")
            rows.append(row)
    return rows


def time_split(
    rows: Sequence[dict[str, Any]], holdout_share: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(older rows to train on, the most recent `holdout_share` of the rows by timestamp)."""
    ordered = sorted(rows, key=lambda r: (str(r["timestamp"]), str(r["provenance"].get("decision_id", ""))))
    n_holdout = round(len(ordered) * holdout_share)
    cut = len(ordered) - n_holdout
    return ordered[:cut], ordered[cut:]


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Examples by provenance source and by label (function name, or "none")."""
    by_source: dict[str, int] = {}
    by_label: dict[str, int] = {}
    for r in rows:
        source = str(r["provenance"].get("source"))
        label = r["expected"]["lambda_function"] or "none"
        by_source[source] = by_source.get(source, 0) + 1
        by_label[label] = by_label.get(label, 0) + 1
    return {
        "examples": len(rows),
        "by_source": dict(sorted(by_source.items())),
        "by_label": dict(sorted(by_label.items())),
    }


@lru_cache(maxsize=1)
def public_vocabulary() -> frozenset[str]:
    """Lower-case words of the public text the model was trained on: the situation table (names, parts,
    summaries, descriptions), the encoder's segment vocabulary, and the alert names and annotations of the
    published rule packs in models/datasets/sources. A redacted export keeps annotation words from it only."""
    from models.builders import DATA_DIR
    from models.data import segment_vocabulary
    from models.encoding import words_of
    from models.sources.build import SOURCES_DIR

    words: set[str] = set(segment_vocabulary())

    def walk(value: Any) -> None:
        if isinstance(value, str):
            words.update(words_of(value))
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(json.loads((DATA_DIR / "situations.json").read_text(encoding="utf-8")))
    for path in sorted(SOURCES_DIR.glob("*.jsonl")) if SOURCES_DIR.is_dir() else []:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                alert = json.loads(line)["alert"]
                walk(alert["labels"].get("alertname", ""))
                walk([alert["annotations"].get(k, "") for k in ("summary", "description", "message")])
    return frozenset(w for w in words if not any(c.isdigit() for c in w))
