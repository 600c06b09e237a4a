"""docs/policy-reference.md, generated from crds/remediationpolicy.yaml.

    python -m controller.tools.policy_reference            # print the reference
    python -m controller.tools.policy_reference --write    # write docs/policy-reference.md (`make docs`)
    python -m controller.tools.policy_reference --check    # exit 1 when the committed file is stale

Every field of `spec` and `status` gets a row (path, type, required, default,
enum, bounds, pattern, description, all read from the CRD's OpenAPI schema),
followed by the CEL rules with their messages, the printer columns, the short
names and categories. The hand-written prose lives in the templates below, so
the whole file is generated and cannot drift from the schema. The output
depends on nothing but the CRD (no dates, no paths of this machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "remediationpolicy.yaml"
DOC_PATH = REPO_ROOT / "docs" / "policy-reference.md"

GENERATED_NOTE = (
    "<!-- Generated from crds/remediationpolicy.yaml by controller/tools/policy_reference.py: do not edit by hand.\n"
    "     Change the CRD (or the prose in the generator), then run `make docs`. -->"
)

INTRO = """\
# RemediationPolicy reference

{generated_note}

`{group}/{version}`, kind `{kind}` (short names {short_names}; {categories_label} {categories}; {scope}).
A policy says which alerts trm-sre may remediate, which functions it may trigger, how it chooses one
(an ordered fallback chain) and what it does with the choice. `kubectl explain {plural}.spec --recursive`
prints every field; the samples in `deploy/samples/` show typical policies. The field tables below
are generated from `crds/remediationpolicy.yaml`, the schema the apiserver enforces.

A small policy:

```yaml
apiVersion: {group}/{version}
kind: {kind}
metadata:
  name: crashloops
  namespace: trm-sre
spec:
  match:
    alertNames: [KubePodCrashLooping]
  allowedFunctions: [pod-restart]
  chain:
    - trm: {{minConfidence: 0.8}}
    - rules:
        - function: pod-restart
          parameters: {{name: "{{{{ $labels.pod }}}}", namespace: "{{{{ $labels.namespace }}}}", type: pod}}
  actions:
    dryRun: true
```

## Who checks what

| check | where | what you see |
|---|---|---|
| shapes, enums, defaults, bounds, unknown fields | apiserver (CRD schema) | `kubectl apply` fails naming the field, e.g. `spec.chain[0].trm.minConfidence: Invalid value: 1.5: ... less than or equal to 1` |
| the cross-field rules listed under [Validation rules](#validation-rules-cel) | apiserver (CEL) | `kubectl apply` fails with the rule's message |
| functions exist in the runbook catalog; rule parameters exist for their function; templates parse; literal parameter values are valid; regexes compile | operator | `Ready=False` with a reason, the field in the message, a Warning Event; the policy is not used |

Unknown fields are refused by kubectl's default (strict) field validation. A client that turns
validation off (`--validate=false`) gets the unknown field silently dropped, never stored.

## The Ready condition

| status | reason | meaning |
|---|---|---|
| True | `Indexed` | valid and in use; the message names the generation, the function count and the chain |
| False | `UnknownFunction` | `allowedFunctions[i]` or a rule's `function` is not a runbook (`trm-sre catalog` lists them) |
| False | `UnknownParameter` | a rule sets a parameter its function does not have |
| False | `InvalidRegex` | `alertNameRegex` or a `=~`/`!~` matcher value does not compile |
| False | `NamespaceScope` | a policy outside the controller's namespace (`--system-namespace`) lists another namespace in `targetNamespaces` (or `*`) or sets `actions.sink`; such a policy acts only on alerts from its own namespace and targets only it (as Flux and Argo CD tenants) |
| False | `InvalidSpec` | anything else the operator refuses: a malformed parameter template, a literal parameter value the runbook rejects, a rule function missing from `allowedFunctions` |

An unreachable `functionCalling` endpoint is never a reason to refuse a policy: at decision time
the stage hands over to the next one. `kubectl describe {short_name} NAME` shows the same reason and
message as a Warning Event, e.g.
`Warning  UnknownFunction  ...  spec.allowedFunctions[1]: 'pod-delete' is not in the runbook catalog (...)`.
"""

FIELDS_LEGEND = """\
How to read the tables: `a.b[]` is an item of the list `a.b`, `a.b.*` a value of the map `a.b`.
*Required* fields must be set when their parent is; a *default* is filled in by the apiserver when
the field is left out. Bounds are inclusive.
"""

STATUS_EXAMPLE = """\
The operator writes `.status` (through the status subresource); never set it yourself.

```yaml
status:
  observedGeneration: 3        # the generation last validated
  mode: active                 # active | dry-run | approval (from spec.actions) | shadow (spec.mode)
  allowedFunctionCount: 2
  conditions: [{type: Ready, status: "True", reason: Indexed, ...}]
  counters:                    # totals since creation, kept across controller restarts
    alertsMatched: 12
    triggers: 9
    escalations: 2
    dryRunDecisions: 0
    deadLetters: 1
    approvalsRequested: 0
  lastDecision: {time, alertname, function, stage, confidence, outcome, decisionId}
```
"""

COLUMNS_NOTE = """\
Each trigger, escalation, dry-run decision, dead letter and approval request is also an Event on
the policy (`kubectl describe {short_name} NAME`); under a storm the oldest pending Events are dropped
and one `EventsDropped` Event says how many. Counters are never dropped.
"""

OPERATING_NOTES = """\
## Operating notes

- The operator writes nothing but `.status` and Events: no finalizers, no annotations. Deleting a
  policy (or uninstalling trm-sre first) never hangs.
- Status is written by one loop every 5 s (at once after a spec change), as a JSON merge patch of
  only the fields that differ; a failed write (apiserver restart, network cut) is retried on the
  next tick.
- RBAC (`deploy/base/rbac.yaml`): read policies, patch their status, create Events, read CRDs.
  No access to pods, deployments or any workload: remediations run elsewhere, triggered by the
  CloudEvents trm-sre emits.
- A `functionCalling.secretRef` names a Secret in the policy's own namespace. The controller may
  only `get` Secrets where `trm-sre-secret-reader` is bound; the base binds it in `trm-sre`. For
  another namespace:
  `kubectl -n NS create rolebinding trm-sre-secret-reader --clusterrole=trm-sre-secret-reader --serviceaccount=trm-sre:trm-sre`.
"""


# --------------------------------------------------------------------------
# Walking the schema
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One property of the schema, with the path a reader types (`spec.chain[].trm.minConfidence`)."""

    path: str
    schema: Mapping[str, Any]
    required: bool


def _item_path(path: str, schema: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The path and schema one level into a list item or map value, when that holds properties."""
    if schema.get("type") == "array" and isinstance(schema.get("items"), Mapping):
        return f"{path}[]", schema["items"]
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        return f"{path}.*", extra
    return None


def walk(schema: Mapping[str, Any], prefix: str) -> Iterator[Field]:
    """Every property under `schema`, depth first, in the CRD's order."""
    required = set(schema.get("required") or ())
    for name, child in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        yield Field(path, child, name in required)
        yield from _walk_inside(child, path)


def _walk_inside(schema: Mapping[str, Any], path: str) -> Iterator[Field]:
    yield from walk(schema, path)
    inner = _item_path(path, schema)
    if inner is not None:
        yield from _walk_inside(inner[1], inner[0])


def validations(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every x-kubernetes-validations rule with the path of the object it sits on."""
    for rule in schema.get("x-kubernetes-validations") or ():
        yield path, rule
    for name, child in (schema.get("properties") or {}).items():
        yield from validations(child, f"{path}.{name}" if path else name)
    inner = _item_path(path, schema)
    if inner is not None:
        yield from validations(inner[1], inner[0])


# --------------------------------------------------------------------------
# Rendering one field
# --------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Table-safe: one line, pipes escaped (GFM needs that even inside code spans)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return f"`{text}`"


def _literal(value: Any) -> str:
    return _code(json.dumps(value, sort_keys=True))


def type_of(schema: Mapping[str, Any]) -> str:
    kind = str(schema.get("type", "any"))
    if kind == "array":
        items = schema.get("items") or {}
        return f"list of {type_of(items)}" if items else "list"
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return f"map of {type_of(schema['additionalProperties'])}"
    if schema.get("format"):
        return f"{kind} ({schema['format']})"
    return kind


def _span(low: Any, high: Any, at_least: str, at_most: str, unit: str = "") -> str | None:
    """`low..high unit`, or the one bound there is with its word, or None."""
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"{low}..{high}{suffix}"
    if low is not None:
        return f"{at_least}{low}{suffix}"
    if high is not None:
        return f"{at_most}{high}{suffix}"
    return None


def _bounds(schema: Mapping[str, Any]) -> list[str]:
    spans = [_span(schema.get("minimum"), schema.get("maximum"), "≥ ", "≤ ")]
    for low, high, unit in (
        ("minLength", "maxLength", "chars"),
        ("minItems", "maxItems", "items"),
        ("minProperties", "maxProperties", "entries"),
    ):
        spans.append(_span(schema.get(low), schema.get(high), "at least ", "at most ", unit))
    return [s for s in spans if s is not None]


def constraints(schema: Mapping[str, Any]) -> str:
    """Enum, bounds, pattern, list semantics, and the same for list items and map values."""
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(_code(v) for v in schema["enum"]))
    parts += _bounds(schema)
    if "pattern" in schema:
        parts.append(f"matches {_code(schema['pattern'])}")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        parts.append("no duplicates")
    elif list_type == "map":
        keys = ", ".join(schema.get("x-kubernetes-list-map-keys") or ())
        parts.append(f"one item per {keys}")
    inner = schema.get("items") if schema.get("type") == "array" else schema.get("additionalProperties")
    if isinstance(inner, Mapping) and not inner.get("properties"):
        nested = constraints(inner)
        if nested:
            parts.append(f"{'each item' if schema.get('type') == 'array' else 'each value'}: {nested}")
    return "; ".join(parts)


def description_of(schema: Mapping[str, Any]) -> str:
    text = str(schema.get("description", "")).strip()
    items = schema.get("items") if schema.get("type") == "array" else None
    if isinstance(items, Mapping) and items.get("properties") and items.get("description"):
        text = f"{text} Each item: {str(items['description']).strip()}".strip()
    return text


def field_row(field: Field) -> str:
    schema = field.schema
    default = _literal(schema["default"]) if "default" in schema else ""
    cells = (
        _code(field.path),
        type_of(schema),
        "yes" if field.required else "",
        default,
        constraints(schema),
        description_of(schema),
    )
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def field_table(fields: Sequence[Field]) -> str:
    head = "| field | type | required | default | constraints | description |\n|---|---|---|---|---|---|"
    return "\n".join([head, *(field_row(f) for f in fields)])


# --------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------


def _version(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    versions = crd["spec"]["versions"]
    return next((v for v in versions if v.get("storage")), versions[0])


def _names_list(values: Sequence[str]) -> str:
    return ", ".join(f"`{v}`" for v in values) if values else "none"


def _rules_table(root: Mapping[str, Any]) -> str:
    rows = ["| on | rule (CEL) | message | reported at |", "|---|---|---|---|"]
    for path, rule in validations(root, ""):
        where = f"{path}{rule['fieldPath']}" if rule.get("fieldPath") else path
        cells = (_code(path), _code(rule["rule"]), rule.get("message", ""), _code(where))
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _columns_table(version: Mapping[str, Any]) -> str:
    rows = ["| column | type | JSONPath | what |", "|---|---|---|---|"]
    for column in version.get("additionalPrinterColumns") or ():
        cells = (column["name"], column["type"], _code(column["jsonPath"]), column.get("description", ""))
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def render(crd: Mapping[str, Any]) -> str:
    """The whole reference as Markdown, from the CRD as loaded from YAML."""
    names = crd["spec"]["names"]
    version = _version(crd)
    root = version["schema"]["openAPIV3Schema"]
    short_names = list(names.get("shortNames") or ())
    categories = list(names.get("categories") or ())
    spec_schema, status_schema = root["properties"]["spec"], root["properties"].get("status") or {}
    context = {
        "generated_note": GENERATED_NOTE,
        "group": crd["spec"]["group"],
        "version": version["name"],
        "kind": names["kind"],
        "plural": names["plural"],
        "short_names": _names_list(short_names),
        "short_name": short_names[0] if short_names else names["plural"],
        "categories_label": "category" if len(categories) == 1 else "categories",
        "categories": _names_list(categories),
        "scope": "namespaced" if crd["spec"].get("scope") == "Namespaced" else "cluster-scoped",
    }
    column_names = [c["name"] for c in version.get("additionalPrinterColumns") or ()]
    columns_line = (
        ", ".join(column_names[:-1]) + f" and {column_names[-1]}" if len(column_names) > 1 else "".join(column_names)
    )
    parts = [
        INTRO.format(**context),
        "## Spec fields\n",
        f"{_cell(spec_schema.get('description', ''))}\n",
        FIELDS_LEGEND,
        field_table(list(walk(spec_schema, "spec"))) + "\n",
        "## Validation rules (CEL)\n",
        "Checked by the apiserver on every create and update; a policy that breaks one is refused with the message.\n",
        _rules_table(root) + "\n",
        "## Status fields\n",
        STATUS_EXAMPLE,
        field_table(list(walk(status_schema, "status"))) + "\n",
        "## kubectl get columns, short names, categories\n",
        (
            f"`kubectl get {context['short_name']}` shows NAME, {columns_line}. Short names: {context['short_names']}; "
            f"`kubectl get {categories[0] if categories else context['plural']}` lists policies with the other "
            f"resources of the {context['categories_label']} {context['categories']}.\n"
        ),
        _columns_table(version) + "\n",
        COLUMNS_NOTE.format(**context),
        OPERATING_NOTES,
    ]
    return "\n".join(parts)


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controller.tools.policy_reference",
        description="Generate docs/policy-reference.md from the CRD.",
    )
    parser.add_argument("--crd", type=Path, default=CRD_PATH, help="the CRD YAML (default: %(default)s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--write", nargs="?", type=Path, const=DOC_PATH, metavar="PATH", help="write the file (default: %(const)s)"
    )
    mode.add_argument(
        "--check", nargs="?", type=Path, const=DOC_PATH, metavar="PATH", help="exit 1 if the file is stale"
    )
    args = parser.parse_args(argv)
    text = render(load_crd(args.crd))
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
        return 0
    if args.check is not None:
        current = args.check.read_text(encoding="utf-8") if args.check.exists() else ""
        if current != text:
            print(f"{args.check} is stale: run `make docs` and commit the result", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
