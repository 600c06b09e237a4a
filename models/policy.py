"""THE labelling policy: one declared table, situation -> decision. Checked against docs/model-card.md.

Each row says, for one situation (what the alert is about), which catalog function to call (or
none), which alert label feeds each copied parameter (first present key wins), the enum values,
and the condition under which the call is made. When the condition fails the decision is "no
automated remediation". Everything that produces training or evaluation labels — the synthetic
generator (`models.data`) and the instantiated real rules (`models.sources.rules`) — calls
`decide(situation, labels)`; label builders only generate labels and text.

The parameter sources are the runbook catalog's `sources` (runbooks/*.yaml); a row may narrow
them (e.g. pod-restart of a Deployment reads only `deployment`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runbooks import Catalog, InvalidCall, default_catalog

REPLICA_TARGET_KEYS = ("replicas", "desired_replicas", "target_replicas", "expected")
FLUX_KIND_KEYS = ("kind", "customresource_kind")


def flux_functions(catalog: Catalog) -> dict[str, str]:
    """Flux kind -> reconcile function, read from the runbooks' `when` (alert_families: [flux], resource_kind)."""
    return {
        rb.when.resource_kind: rb.name
        for rb in catalog.functions
        if "flux" in rb.when.alert_families and rb.when.resource_kind
    }


FLUX_ACTION_KINDS = flux_functions(default_catalog())
_FLUX_NAME = {
    "Kustomization": ("name", "kustomization", "exported_name", "resource_name"),
    "HelmRelease": ("name", "helmrelease", "exported_name", "resource_name"),
    "GitRepository": ("name", "gitrepository", "exported_name", "resource_name"),
}
_NS = ("namespace", "exported_namespace")
_FLUX_NS = ("exported_namespace", "namespace")


@dataclass(frozen=True)
class Target:
    """The policy's call before validation: function (None = no remediation) and where each parameter comes from."""

    function: str | None
    pointers: dict[str, str] = field(default_factory=dict)  # parameter -> label key that carries it
    enums: dict[str, str] = field(default_factory=dict)  # parameter -> enum value


NONE = Target(None)


@dataclass(frozen=True)
class Rule:
    """One row of the policy table."""

    situation: str
    function: str | None  # None: never acts
    condition: str  # when the call is made (else: none), in words
    required: dict[str, tuple[str, ...]] = field(default_factory=dict)  # parameter -> label keys; one must be present
    optional: dict[str, tuple[str, ...]] = field(default_factory=dict)  # parameter -> label keys; absent = default
    enums: dict[str, str] = field(default_factory=dict)
    unless: tuple[str, ...] = ()  # label keys whose presence moves the row to `otherwise`
    otherwise: str | None = None  # the situation whose row applies when `unless` matches
    flux_kind: str | None = None  # Flux rows: the kind the alert is about when no kind label says
    family: str | None = None  # must be in the runbook's `when.alert_families`


def _flux_row(situation: str, kind: str | None) -> Rule:
    return Rule(
        situation,
        "flux-by-kind",
        "the Flux kind (a `kind`/`customresource_kind` label, else the kind the alert names) is Kustomization, "
        "HelmRelease or GitRepository, and an object-name label is present; namespace defaults to flux-system",
        flux_kind=kind,
        family="flux",
    )


# situation -> decision. Rows with function None never act, whatever the labels.
POLICY: tuple[Rule, ...] = (
    Rule(
        "pod-crash",
        "pod-restart",
        "a `pod` label is present (the crash-looping / OOM-killed pod)",
        required={"name": ("pod",), "namespace": _NS},
        enums={"type": "pod"},
        family="pod",
    ),
    Rule(
        "pod-waiting",
        "pod-check-status",
        "a `pod` label is present (the pod not ready / pending / waiting / failed)",
        required={"name": ("pod",), "namespace": _NS},
        family="pod",
    ),
    Rule(
        "deployment-stuck",
        "pod-restart",
        "a `deployment` label is present; with a replica-target label: scale instead",
        required={"name": ("deployment",), "namespace": _NS},
        enums={"type": "deployment"},
        unless=REPLICA_TARGET_KEYS,
        otherwise="scale-request",
        family="deployment",
    ),
    Rule(
        "scale-request",
        "scale-deployment",
        "a `deployment` label and a replica-target label "
        "(`replicas`, `desired_replicas`, `target_replicas`, `expected`) are present",
        required={"name": ("deployment",), "namespace": _NS, "replicas": REPLICA_TARGET_KEYS},
        family="deployment",
    ),
    Rule(
        "deployment-load",
        "scale-deployment",
        "as scale-request: only an explicit replica target makes it act",
        required={"name": ("deployment",), "namespace": _NS, "replicas": REPLICA_TARGET_KEYS},
        family="deployment",
    ),
    Rule(
        "pvc-filling",
        "check-pvc-status",
        "a namespace label is present; the claim from `persistentvolumeclaim`/`pvc` "
        "(without one: every claim of the namespace)",
        required={"namespace": _NS},
        optional={"name": ("persistentvolumeclaim", "pvc")},
        family="storage",
    ),
    _flux_row("flux-generic", None),
    _flux_row("flux-kustomization", "Kustomization"),
    _flux_row("flux-helmrelease", "HelmRelease"),
    _flux_row("flux-gitrepository", "GitRepository"),
    Rule(
        "flux-other-kind",
        None,
        "never: no reconcile function for OCIRepository, HelmRepository, HelmChart, Bucket, Image*, notification kinds",
    ),
    Rule("flux-suspended", None, "never: a suspended Flux object was suspended on purpose"),
    *(
        Rule(s, None, "never")
        for s in (
            "statefulset",
            "daemonset",
            "job",
            "hpa",
            "container-resources",
            "node",
            "host",
            "control-plane",
            "certificate",
            "monitoring-internals",
            "quota",
            "pvc-other",
            "application",
            "meta",
        )
    ),
)
BY_SITUATION = {r.situation: r for r in POLICY}


def check_against_catalog(catalog: Catalog) -> None:
    """Every acting row's function exists and lists the row's family in its runbook's `when.alert_families`;
    every Flux kind the table can act on has a runbook with that `when.resource_kind`. Raises ValueError."""
    kinds = flux_functions(catalog)
    for r in POLICY:
        if r.function is None:
            continue
        functions = sorted(kinds.values()) if r.function == "flux-by-kind" else [r.function]
        for name in functions:
            rb = catalog.get(name)
            if rb is None or r.family not in rb.when.alert_families:
                raise ValueError(f"policy row {r.situation}: {name} is not a runbook for alert family {r.family!r}")
        if r.flux_kind and r.flux_kind not in kinds:
            raise ValueError(f"policy row {r.situation}: no runbook has when.resource_kind {r.flux_kind}")


def _first(labels: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in labels), None)


def decide(situation: str, labels: dict[str, Any]) -> Target:
    """The policy's call for an alert of `situation` carrying `labels` (before validation)."""
    rule = BY_SITUATION.get(situation)
    if rule is None or rule.function is None:
        return NONE
    if rule.unless and any(k in labels for k in rule.unless) and rule.otherwise:
        return decide(rule.otherwise, labels)
    if rule.function == "flux-by-kind":
        kind_key = _first(labels, FLUX_KIND_KEYS)
        kind = labels[kind_key] if kind_key else rule.flux_kind
        function = FLUX_ACTION_KINDS.get(kind) if isinstance(kind, str) else None
        name_key = _first(labels, _FLUX_NAME.get(kind, ())) if function else None
        if function is None or name_key is None:
            return NONE
        ns_key = _first(labels, _FLUX_NS)
        return Target(function, {"name": name_key} | ({"namespace": ns_key} if ns_key else {}))
    pointers: dict[str, str] = {}
    for param, keys in rule.required.items():
        key = _first(labels, keys)
        if key is None:
            return NONE
        pointers[param] = key
    for param, keys in rule.optional.items():
        key = _first(labels, keys)
        if key is not None:
            pointers[param] = key
    return Target(rule.function, pointers, dict(rule.enums))


def expected_decision(target: Target, labels: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """The policy's call, validated: an invalid call (hostile value, missing namespace) becomes no remediation."""
    if target.function is None:
        return {"lambda_function": None, "parameters": {}}
    raw: dict[str, Any] = {p: labels[k] for p, k in target.pointers.items()} | dict(target.enums)
    try:
        clean = catalog.validate_call(target.function, raw)
    except InvalidCall:
        return {"lambda_function": None, "parameters": {}}
    return {"lambda_function": target.function, "parameters": clean}


def markdown_table() -> str:
    """The table as the model card prints it."""
    lines = ["| situation | decision | parameters <- labels (first present) | condition |", "|---|---|---|---|"]
    for r in POLICY:
        if r.function is None:
            lines.append(f"| {r.situation} | none | — | {r.condition} |")
            continue
        if r.function == "flux-by-kind":
            params = (
                "name <- name / the kind's own key (kustomization, helmrelease, gitrepository) / exported_name / "
                "resource_name; namespace <- exported_namespace / namespace (default flux-system)"
            )
            decision = "flux-reconcile-<kind>" + (
                f" (kind {r.flux_kind} unless a kind label says otherwise)" if r.flux_kind else ""
            )
        else:
            parts = [f"{p} <- {' / '.join(k)}" for p, k in r.required.items()]
            parts += [f"{p} <- {' / '.join(k)} (optional)" for p, k in r.optional.items()]
            parts += [f"{p} = {v}" for p, v in r.enums.items()]
            params, decision = "; ".join(parts), r.function
        lines.append(f"| {r.situation} | {decision} | {params} | {r.condition} |")
    return "\n".join(lines)
