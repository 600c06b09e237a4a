"""The runbook policy as a situation table, and a seeded generator of labelled alerts.

Why a generator and not a list: the model is judged on alert rules written by other
people (published rule packs it never saw), so it must learn the *words* of an alert
(subject: pod / deployment / statefulset / node...; condition: crash-looping / not ready /
filling up...; the Flux `kind`), not a list of names. Each situation therefore has
(1) curated real names (kube-prometheus mixins, kube-state-metrics rule packs, Flux,
exporters) and (2) parts (prefix, subject, condition, suffix) composed and cased at random.

Every generated example is an Alertmanager v4 alert plus:
- `expected`: the decision after `catalog.validate_call` (what the eval checks; None when
  the policy's call would be invalid, e.g. a missing namespace or a hostile pod name);
- `target`: the policy *before* validation, as label keys (what the model is trained on:
  which function, which label slot carries each parameter, which enum value).
Both come from ONE declared table, `models.policy.POLICY` (situation -> decision); the label
builders below only generate labels and text.

Splits are held out **by canonical alert name** (case/separators removed): a name's hash
puts it in exactly one of train / validation-heldout / test-heldout, and the generator
rejects names of the wrong bucket, so the held-out test names are never seen in training.

`python -m models.data` writes the JSONL splits to `models/datasets/`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from models import policy
from models.builders import (  # noqa: F401 - re-exported: the builders and label values are part of the generator
    APPS,
    DATA_DIR,
    FLUX_OTHER_KINDS,
    NAMESPACES,
    Draft,
    _alnum,
    _flux_kind_builder,
    _scale_builder,
    app_name,
    build_deployment_stuck,
    build_flux_generic,
    build_flux_suspended,
    build_pod_crash,
    build_pod_waiting,
    build_pvc,
)
from models.builders_negative import (
    _workload_builder,
    build_application,
    build_certificate,
    build_container_resources,
    build_control_plane,
    build_host,
    build_meta,
    build_monitoring_internals,
    build_node,
    build_pvc_other,
    build_quota,
)
from models.sources.rules import ROUTING_LABELS
from models.sources.training import augment_annotations, augment_name, expression_for
from models.version import DATA_VERSION  # noqa: F401 - re-exported for older callers
from runbooks import Catalog, default_catalog

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"

# Name buckets (percent of canonical names): test-heldout / validation-heldout / train.
TEST_NAME_PCT = 12
VAL_NAME_PCT = 8


# ----------------------------------------------------------------------------------------------
# Alert names: composition, casing, canonical form and name buckets
# ----------------------------------------------------------------------------------------------
def split_words(name: str) -> list[str]:
    """CamelCase / snake / kebab / spaced -> words ("KubePodCrashLooping" -> Kube Pod Crash Looping)."""
    out: list[str] = []
    for chunk in re.split(r"[^A-Za-z0-9]+", name):
        out += re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+", chunk)
    return out


def render_name(rng: random.Random, parts: Sequence[str]) -> str:
    """Join name parts with one of the casings real rule sets use (CamelCase dominates)."""
    words = [w for p in parts for w in ([p] if p.lower() == "k8s" else split_words(p))]
    style = rng.choices(
        ["camel", "snake", "lower", "upper_snake", "kebab", "spaced", "lowercamel"], [72, 7, 4, 5, 4, 5, 3]
    )[0]
    if style == "camel":
        return "".join(p for p in parts)
    if style == "snake":
        return "_".join(w.lower() for w in words)
    if style == "lower":
        return "".join(w.lower() for w in words)
    if style == "upper_snake":
        return "_".join(w.upper() for w in words)
    if style == "kebab":
        return "-".join(w.lower() for w in words)
    if style == "spaced":
        return " ".join([words[0].capitalize()] + [w.lower() for w in words[1:]])
    joined = "".join(parts)
    return joined[0].lower() + joined[1:]


def canonical_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def name_bucket(name: str) -> str:
    """'test' / 'val' / 'train': fixed by the canonical name, so casing variants never leak."""
    h = zlib.crc32(("trm-sre-names:" + canonical_name(name)).encode()) % 100
    if h < TEST_NAME_PCT:
        return "test"
    if h < TEST_NAME_PCT + VAL_NAME_PCT:
        return "val"
    return "train"


@dataclass(frozen=True)
class Situation:
    """One row of the policy table: how such alerts are named, labelled, described, and decided."""

    key: str
    weight: float
    curated: tuple[str, ...]
    parts: tuple[tuple[str, ...], ...]  # alternatives per position, composed into a name
    build: Callable[[random.Random], Draft]
    summaries: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()

    def name(self, rng: random.Random) -> str:
        if self.curated and (not self.parts or rng.random() < 0.45):
            name = rng.choice(self.curated)
            # Real rule packs re-case names too (snake_case exports, "Test" copies of rules).
            if rng.random() < 0.1:
                name = render_name(rng, split_words(name.replace("K8s", "Kubernetes")))
            return name
        return render_name(rng, [rng.choice(alts) for alts in self.parts if alts])


# ----------------------------------------------------------------------------------------------
# The situation table
# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# The situation table: words in models/data/situations.json, one label builder per situation here,
# the decision in models/policy.py.
# ----------------------------------------------------------------------------------------------
BUILDERS: dict[str, Callable[[random.Random], Draft]] = {
    "pod-crash": build_pod_crash,
    "pod-waiting": build_pod_waiting,
    "deployment-stuck": build_deployment_stuck,
    "scale-request": _scale_builder(1.0),
    "deployment-load": _scale_builder(0.5),
    "pvc-filling": build_pvc,
    "flux-generic": build_flux_generic,
    "flux-kustomization": _flux_kind_builder("Kustomization"),
    "flux-helmrelease": _flux_kind_builder("HelmRelease"),
    "flux-gitrepository": _flux_kind_builder("GitRepository"),
    "flux-other-kind": lambda rng: _flux_kind_builder(rng.choice(FLUX_OTHER_KINDS))(rng),
    "flux-suspended": build_flux_suspended,
    "statefulset": _workload_builder("statefulset", app_name),
    "daemonset": _workload_builder("daemonset", app_name),
    "job": _workload_builder("job_name", lambda rng: f"{app_name(rng)}-{rng.randint(27000000, 29999999)}"),
    "hpa": _workload_builder("horizontalpodautoscaler", app_name),
    "container-resources": build_container_resources,
    "node": build_node,
    "host": build_host,
    "control-plane": build_control_plane,
    "certificate": build_certificate,
    "monitoring-internals": build_monitoring_internals,
    "quota": build_quota,
    "pvc-other": build_pvc_other,
    "application": build_application,
    "meta": build_meta,
}


def _load_situations() -> tuple[Situation, ...]:
    table = json.loads((DATA_DIR / "situations.json").read_text(encoding="utf-8"))["situations"]
    return tuple(
        Situation(
            key,
            float(s["weight"]),
            tuple(s["curated"]),
            tuple(tuple(p) for p in s["parts"]),
            BUILDERS[key],
            tuple(s["summaries"]),
            tuple(s["descriptions"]),
        )
        for key, s in table.items()
    )


SITUATIONS: tuple[Situation, ...] = _load_situations()


# ----------------------------------------------------------------------------------------------
# Assembly: name + labels + rendered annotations -> an Alertmanager alert with expected decision
# ----------------------------------------------------------------------------------------------
class _Fill(dict):  # str.format_map that leaves unknown fields blank
    def __missing__(self, key: str) -> str:
        return ""


def _annotations(
    rng: random.Random, sit: Situation, labels: dict[str, str], context: dict[str, str], alertname: str
) -> dict[str, str]:
    values = _Fill(labels) | context | {"n": str(rng.randint(2, 97))}
    values = _Fill(values)
    out: dict[str, str] = {}
    r = rng.random()
    if r < 0.08:
        return out
    if sit.summaries and rng.random() < 0.85:
        out["summary"] = rng.choice(sit.summaries).format_map(values)
    if sit.descriptions and rng.random() < 0.8:
        out["description" if rng.random() < 0.8 else "message"] = rng.choice(sit.descriptions).format_map(values)
    if rng.random() < 0.4:
        base = rng.choice(
            [
                "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/",
                "https://github.com/example/runbooks/blob/main/",
                "https://wiki.example.com/alerts/",
            ]
        )
        out["runbook_url"] = base + alertname.lower()
    return out


def _alert(
    rng: random.Random, labels: dict[str, str], annotations: dict[str, str], expr: str = "up == 0"
) -> dict[str, Any]:
    day = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}"  # drawn in the same order as before
    t = f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    return {
        "status": "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": t,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": generator_url(rng, expr),
        "fingerprint": _alnum(rng, 16, "0123456789abcdef"),
    }


def generator_url(rng: random.Random, expr: str) -> str:
    """Prometheus' link to the rule's expression; sometimes none or one without the expression (other senders,
    hand-made test alerts), so the model never depends on it alone."""
    r = rng.random()
    if r < 0.12:
        return ""
    if r < 0.17:
        return rng.choice(
            [
                "http://vmalert.monitoring.svc:8880/vmalert/alert?group_id=1234&alert_id=5678",
                "https://grafana.example.com/alerting/grafana/abc123/view",
                "http://localhost:9090",
            ]
        )
    return (
        rng.choice(
            ["http://prometheus.monitoring.svc:9090", "http://prometheus-k8s-0:9090", "https://prometheus.example.com"]
        )
        + "/graph?g0.expr="
        + quote(expr, safe="")
        + "&g0.tab=1"
    )


def generate(n: int, seed: int, bucket: str, catalog: Catalog | None = None) -> list[dict[str, Any]]:
    """`n` labelled examples whose alert names all fall in name bucket `bucket` ('train'|'val'|'test')."""
    catalog = catalog or default_catalog()
    rng = random.Random(f"trm-sre:{seed}:{bucket}")
    weights = [s.weight for s in SITUATIONS]
    out: list[dict[str, Any]] = []
    while len(out) < n:
        sit = rng.choices(SITUATIONS, weights)[0]
        for _ in range(200):  # rejection-sample a name of the right bucket
            alertname = sit.name(rng)
            if name_bucket(alertname) == bucket:
                break
        else:
            continue
        draft = sit.build(rng)
        labels = {"alertname": alertname} | draft.labels
        if rng.random() < 0.5:  # label order carries no meaning
            items = list(labels.items())
            rng.shuffle(items)
            labels = dict(items)
        if rng.random() < 0.3:  # routing / ownership / external labels, sometimes many
            for key, values in rng.sample(ROUTING_LABELS, rng.randint(1, 8)):
                labels.setdefault(key, rng.choice(values))
        annotations = _annotations(rng, sit, labels, draft.context, alertname)
        if rng.random() < 0.25:
            annotations = augment_annotations(annotations, labels, rng)
        if rng.random() < 0.15:  # env/product prefixes and suffixes (the bucket is the base name's)
            labels["alertname"] = augment_name(alertname, rng)
        t = policy.decide(sit.key, labels)  # THE policy table (models/policy.py); builders only make labels and text
        out.append(
            {
                "alert": _alert(rng, labels, annotations, expression_for(sit.key, labels, rng)),
                "expected": policy.expected_decision(t, labels, catalog),
                "target": {"lambda_function": t.function, "pointers": t.pointers, "enums": t.enums},
                "situation": sit.key,
            }
        )
    return out


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n" for row in rows)


# What the committed files hold; training regenerates its (larger) train set from the same seed.
SPLITS = {
    # file name: (n, seed, name bucket)
    "train-sample.jsonl": (500, 1, "train"),
    "val.jsonl": (1000, 2, "val"),
    "test-random.jsonl": (1000, 3, "train"),
    "test-heldout-names.jsonl": (1500, 4, "test"),
}
TRAIN_SEED = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATASETS_DIR)
    args = parser.parse_args(argv)
    for fname, (n, seed, bucket) in SPLITS.items():
        rows = generate(n, seed, bucket)
        write_jsonl(args.out / fname, rows)
        n_none = sum(r["expected"]["lambda_function"] is None for r in rows)
        size = (args.out / fname).stat().st_size
        print(f"{fname}: {len(rows)} examples, {n_none / len(rows):.0%} no-remediation, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def segment_vocabulary() -> tuple[str, ...]:
    """Words of the situation table (parts, and curated names of the *train* name bucket only).

    The encoder uses them to split run-together names ("kubepodcrashlooping"); held-out test
    names contribute nothing, so the held-out split stays unseen.
    """
    words: set[str] = set()
    for sit in SITUATIONS:
        for alts in sit.parts:
            for part in alts:
                words.update(w.lower() for w in split_words(part))
        for name in sit.curated:
            if name_bucket(name) == "train":
                words.update(w.lower() for w in split_words(name))
    words.update(
        [
            "pod",
            "pods",
            "container",
            "deployment",
            "persistent",
            "volume",
            "claim",
            "flux",
            "helm",
            "release",
            "git",
            "repository",
            "kustomization",
            "restart",
            "restarts",
            "crash",
            "loop",
            "looping",
            "oom",
            "killed",
            "memory",
            "ready",
            "not",
            "pending",
            "image",
            "pull",
            "back",
            "off",
            "filling",
            "up",
            "inodes",
            "space",
            "kube",
            "kubernetes",
            "node",
            "stateful",
            "set",
            "daemon",
            "job",
            "cron",
            "hpa",
            "replicas",
            "mismatch",
        ]
    )
    return tuple(sorted(w for w in words if len(w) >= 2))
