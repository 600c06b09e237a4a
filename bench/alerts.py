"""Alerts and Alertmanager payloads for the load tests, and the held-out evaluation sets.

Load-test alerts are crash-looping pods, each on its own pod (so each is its
own incident and its own cooldown target) with an explicit fingerprint, which
the trigger carries back in `data.alert.fingerprint`: that is how a trigger at
the sink is matched to the POST that caused it.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO / "models" / "datasets"
HELD_OUT = DATASETS / "test-heldout-names.jsonl"
RANDOM_SPLIT = DATASETS / "test-random.jsonl"
BENCH_POLICY = Path(__file__).resolve().parent / "policies" / "bench-policy.yaml"


def fingerprint(run: str, phase: str, index: int) -> str:
    """16 hex digits, unique per (run, phase, index): the correlation key."""
    return f"{zlib.crc32(f'{run}/{phase}'.encode()):08x}{index:08x}"


def crashloop_alert(run: str, phase: str, index: int, starts_at: str, extra_labels: int = 0) -> dict[str, Any]:
    # The run goes into the pod name too: the same state directory used twice must not see cooldowns from the last run.
    pod = f"bench-{phase}-{zlib.crc32(run.encode()):08x}-{index}"
    labels = {
        "alertname": "KubePodCrashLooping",
        "container": "app",
        "job": "kube-state-metrics",
        "namespace": "bench",
        "pod": pod,
        "reason": "CrashLoopBackOff",
        "severity": "warning",
    }
    for i in range(extra_labels):
        labels[f"extra_{i}"] = f"value-{i}"
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {
            "summary": "Pod is crash looping.",
            "description": f'Pod bench/{pod} (app) is in waiting state (reason: "CrashLoopBackOff").',
        },
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=kube_pod_container_status_waiting_reason",
        "fingerprint": fingerprint(run, phase, index),
    }


def payload(alerts: list[dict[str, Any]], group: str) -> dict[str, Any]:
    """An Alertmanager v4 webhook payload around `alerts` (one group)."""
    common = (
        dict(alerts[0]["labels"]) if len(alerts) == 1 else {"alertname": "KubePodCrashLooping", "namespace": "bench"}
    )
    return {
        "receiver": "trm-sre",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": {"alertname": "KubePodCrashLooping", "namespace": "bench"},
        "commonLabels": common,
        "commonAnnotations": {"summary": "Pod is crash looping."},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="KubePodCrashLooping", group="{group}"}}',
        "truncatedAlerts": 0,
    }


def load_rows(path: Path = HELD_OUT, limit: int | None = None) -> list[dict[str, Any]]:
    """Labelled rows {"alert", "expected", ...} of an evaluation set, the first `limit` of them."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows
