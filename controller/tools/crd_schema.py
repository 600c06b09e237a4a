"""The CRD's structural schema, checked offline: what the apiserver would refuse before any controller sees it.

`CrdSchema` loads crds/remediationpolicy.yaml (openAPIV3Schema);
`structural_problems` walks exactly the keywords the CRD uses
(`SCHEMA_KEYWORDS`): types, required fields, enums, bounds, lengths,
patterns, item counts, sets without duplicates, and unknown fields, which
kubectl's default strict field validation refuses. It is not a general
OpenAPI validator. Pure: documents in, field-addressed `Problem`s out.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.decision.policy_checks import Problem
from controller.schemas.crd import API_VERSION, GROUP, KIND

#: The CRD: `controller/crds` links to the repository's `crds/` and is package data, so an installed
#: package carries the same file.
DEFAULT_CRD_PATH = Path(__file__).resolve().parents[1] / "crds" / "remediationpolicy.yaml"
#: What a manifest without metadata.namespace gets, as with `kubectl apply` and `trm-sre run --policies`.
DEFAULT_NAMESPACE = "default"

#: The OpenAPI keywords `structural_problems` understands. Loading a CRD whose spec uses any other
#: validation keyword fails, so a new keyword cannot be silently ignored.
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "maxProperties",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-validations",
        "description",
        "default",
        "format",
    }
)

#: CEL rules of the CRD that controller/schemas/policy.py enforces too (so `check_policy` reports them):
#: the rule's text -> where. A rule not listed here is reported as checked by the apiserver only.
_ALLOWED_RULE = "self.chain.all(s, !has(s.rules) || s.rules.all(r, r.function in self.allowedFunctions))"
_ONE_STAGE_RULE = (
    "[has(self.staticAnnotation), has(self.trm), has(self.functionCalling), has(self.rules)].filter(x, x).size() == 1"
)
_APPROVAL_RULE = "!has(self.requireApproval) || !self.requireApproval || has(self.approvalTimeoutSeconds)"
_LIVE_STAGE_RULE = "!has(self.mode) || self.mode == 'Shadow' || self.chain.exists(s, !has(s.shadow) || !s.shadow)"
CEL_RULES_ENFORCED_BY_MODEL: dict[str, str] = {
    _LIVE_STAGE_RULE: "PolicySpec._live_policy_has_a_live_stage",
    _ALLOWED_RULE: "PolicySpec._rules_use_allowed_functions, and catalog_problems per rule",
    _ONE_STAGE_RULE: "Stage._exactly_one",
    _APPROVAL_RULE: "Actions._approval_needs_timeout",
}

# Problem reasons of the schema layer (the operator's are InvalidSpec, UnknownFunction, ...).
REQUIRED = "Required"
UNKNOWN_FIELD = "UnknownField"
WRONG_TYPE = "WrongType"
NOT_SUPPORTED = "NotSupported"
OUT_OF_RANGE = "OutOfRange"
BAD_LENGTH = "BadLength"
PATTERN_MISMATCH = "PatternMismatch"
BAD_ITEM_COUNT = "BadItemCount"
DUPLICATE = "Duplicate"
INVALID = "Invalid"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --------------------------------------------------------------------------
# The CRD
# --------------------------------------------------------------------------


class PolicyInputError(ValueError):
    """A file that cannot be read or parsed as YAML; the message names the file (and the line)."""

    def __init__(self, source: str, reason: str, line: int | None = None) -> None:
        super().__init__(f"{source}:{line}: {reason}" if line else f"{source}: {reason}")
        self.source, self.reason, self.line = source, reason, line


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry and the schema node it sits on (`spec.chain[*]`)."""

    path: str
    rule: str
    message: str
    field_path: str = ""  # the rule's fieldPath (`.approvalTimeoutSeconds`): where the apiserver reports it

    @property
    def enforced_by(self) -> str | None:
        """Where the pydantic model enforces the same constraint, or None (only the apiserver checks it)."""
        return CEL_RULES_ENFORCED_BY_MODEL.get(" ".join(self.rule.split()))

    def pinpoint(self, problem: Problem) -> Problem:
        """The model's report of this rule, moved to its fieldPath (`spec.actions` -> `...approvalTimeoutSeconds`)."""
        node = re.escape(self.path).replace(re.escape("[*]"), r"\[\d+\]")
        if self.field_path and problem.message.startswith(self.message) and re.fullmatch(node, problem.field):
            return Problem(problem.reason, problem.field + self.field_path, problem.message)
        return problem


@dataclass(frozen=True)
class CrdSchema:
    """The openAPIV3Schema of the served version, and its CEL rules."""

    root: Mapping[str, Any]
    cel_rules: tuple[CelRule, ...]
    source: str

    @property
    def unchecked_rules(self) -> tuple[CelRule, ...]:
        """CEL rules nothing offline checks."""
        return tuple(rule for rule in self.cel_rules if rule.enforced_by is None)

    @classmethod
    def from_manifest(cls, crd: Any, source: str = "<crd>") -> CrdSchema:
        if not isinstance(crd, Mapping) or crd.get("kind") != "CustomResourceDefinition":
            raise PolicyInputError(source, "not a CustomResourceDefinition")
        spec = crd.get("spec") or {}
        if spec.get("group") != GROUP or (spec.get("names") or {}).get("kind") != KIND:
            raise PolicyInputError(source, f"not the {KIND} CRD of {GROUP}")
        version = API_VERSION.split("/", 1)[1]
        for served in spec.get("versions") or ():
            if served.get("name") == version:
                root = ((served.get("schema") or {}).get("openAPIV3Schema")) or {}
                unknown = sorted({k for _, node in _schema_nodes(root, "") for k in node} - SCHEMA_KEYWORDS)
                if unknown:
                    raise PolicyInputError(source, f"schema keywords this validator does not implement: {unknown}")
                rules = tuple(
                    CelRule(path, str(v.get("rule", "")), str(v.get("message", "")), str(v.get("fieldPath", "")))
                    for path, node in _schema_nodes(root, "")
                    for v in node.get("x-kubernetes-validations") or ()
                )
                return cls(root, rules, source)
        raise PolicyInputError(source, f"the CRD does not serve {version}")


def _schema_nodes(node: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node under `node` with its path (`spec.chain[*].rules`), status excluded."""
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        if path == "" and name == "status":
            continue  # written by the operator through the status subresource, never by a manifest
        yield from _schema_nodes(sub, _child(path, name))
    if isinstance(node.get("items"), Mapping):
        yield from _schema_nodes(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _schema_nodes(node["additionalProperties"], f"{path}.*")


# --------------------------------------------------------------------------
# The structural schema walk
# --------------------------------------------------------------------------


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else str(value)


def _shown(value: Any) -> str:
    """A value as a message quotes it: JSON, shortened."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_value(value: Any) -> str:
    """How a value appears in a message: its JSON type, and the value itself when it is short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {_number(value)}"
    if isinstance(value, str):
        return f"string {_shown(value)}"
    return "array" if isinstance(value, list) else "object" if isinstance(value, Mapping) else type(value).__name__


def _type_ok(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, Mapping)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if expected == "integer":  # as the apiserver's validator: a float with no fraction is an integer
        return isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
    return expected == "number" and math.isfinite(value)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def structural_problems(value: Any, schema: Mapping[str, Any], path: str = "") -> list[Problem]:
    """What the apiserver's schema validation (with strict field validation) refuses in `value`.

    Null values count as absent: the apiserver prunes them from fields that are
    not nullable (none in this CRD is). Paths look like `spec.chain[1].trm.minConfidence`.
    """
    expected = schema.get("type")
    if expected and not _type_ok(value, expected):
        return [Problem(WRONG_TYPE, path, f"must be {expected} (got {describe_value(value)})")]
    problems: list[Problem] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_shown(v) for v in schema["enum"])
        problems.append(Problem(NOT_SUPPORTED, path, f"must be one of {allowed} (got {_shown(value)})"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(
                Problem(OUT_OF_RANGE, path, f"must be >= {_number(schema['minimum'])} (got {_number(value)})")
            )
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(
                Problem(OUT_OF_RANGE, path, f"must be <= {_number(schema['maximum'])} (got {_number(value)})")
            )
    if isinstance(value, str):
        problems += _string_problems(value, schema, path)
    if isinstance(value, list):
        problems += _array_problems(value, schema, path)
    if isinstance(value, Mapping):
        problems += _object_problems(value, schema, path)
    return problems


def _go_pattern(pattern: str) -> str:
    """The apiserver's RE2 semantics: a final `$` is the end of the text, never "before a final newline"."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def _string_problems(value: str, schema: Mapping[str, Any], path: str) -> list[Problem]:
    problems = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        need = plural(schema["minLength"], "character")
        problems.append(Problem(BAD_LENGTH, path, f"must be at least {need} long (got {len(value)})"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        need = plural(schema["maxLength"], "character")
        problems.append(Problem(BAD_LENGTH, path, f"must be at most {need} long (got {len(value)})"))
    if "pattern" in schema and re.search(_go_pattern(schema["pattern"]), value) is None:
        problems.append(Problem(PATTERN_MISMATCH, path, f"must match {schema['pattern']} (got {_shown(value)})"))
    return problems


def _array_problems(value: list[Any], schema: Mapping[str, Any], path: str) -> list[Problem]:
    problems = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        problems.append(
            Problem(BAD_ITEM_COUNT, path, f"must have at least {plural(schema['minItems'], 'item')} (got {len(value)})")
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        problems.append(
            Problem(BAD_ITEM_COUNT, path, f"must have at most {plural(schema['maxItems'], 'item')} (got {len(value)})")
        )
    items = schema.get("items")
    for i, item in enumerate(value):
        if isinstance(items, Mapping):
            problems += structural_problems(item, items, f"{path}[{i}]")
    list_type = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys") or ()
    seen: dict[Any, int] = {}
    for i, item in enumerate(value):
        if list_type == "set":
            identity: Any = repr(item)
        elif list_type == "map" and isinstance(item, Mapping):
            identity = tuple(repr(item.get(k)) for k in keys)
        else:
            continue
        if identity in seen:
            what = _shown(item) if list_type == "set" else ", ".join(f"{k}={_shown(item.get(k))}" for k in keys)
            problems.append(Problem(DUPLICATE, f"{path}[{i}]", f"duplicate value {what} (also at [{seen[identity]}])"))
        else:
            seen[identity] = i
    return problems


def _object_problems(value: Mapping[str, Any], schema: Mapping[str, Any], path: str) -> list[Problem]:
    problems = []
    properties: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    present = {k: v for k, v in value.items() if v is not None}
    if "maxProperties" in schema and len(present) > schema["maxProperties"]:
        most = schema["maxProperties"]
        problems.append(Problem(BAD_ITEM_COUNT, path, f"must have at most {most} entries (got {len(present)})"))
    for name, item in value.items():
        where = _child(path, str(name))
        if name not in properties and not isinstance(extra, Mapping) and extra is not True:
            problems.append(Problem(UNKNOWN_FIELD, where, _unknown_field_message(str(name), properties)))
        elif item is not None:
            problems += structural_problems(item, properties.get(name, extra), where)
    problems += [
        Problem(REQUIRED, _child(path, name), "required field is missing")
        for name in schema.get("required") or ()
        if name not in present
    ]
    return problems


def _unknown_field_message(name: str, properties: Mapping[str, Any]) -> str:
    if not properties:
        return "unknown field (this object takes no fields)"
    close = difflib.get_close_matches(name, list(properties), n=1, cutoff=0.6)
    return f"unknown field; did you mean {_shown(close[0])}?" if close else "unknown field (not in the CRD schema)"


def metadata_problems(metadata: Any) -> list[Problem]:
    """What the apiserver checks in metadata before any schema: a name and a namespace it can use."""
    if metadata is None:
        return [Problem(REQUIRED, "metadata.name", "required field is missing")]
    if not isinstance(metadata, Mapping):
        return [Problem(WRONG_TYPE, "metadata", f"must be object (got {describe_value(metadata)})")]
    problems = []
    name = metadata.get("name")
    if name is None:
        problems.append(Problem(REQUIRED, "metadata.name", "required field is missing"))
    elif not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(
            Problem(INVALID, "metadata.name", f"must be a lowercase RFC 1123 subdomain (got {describe_value(name)})")
        )
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace)
    ):
        problems.append(
            Problem(
                INVALID, "metadata.namespace", f"must be a lowercase RFC 1123 label (got {describe_value(namespace)})"
            )
        )
    return problems


def manifest_schema_problems(doc: Mapping[str, Any], crd: CrdSchema) -> list[Problem]:
    """The whole manifest against the CRD: metadata as the apiserver checks it, then the schema.

    `status` is left out: with the status subresource the apiserver ignores it in a manifest.
    """
    outside = ("metadata", "status")
    body = {k: v for k, v in doc.items() if k not in outside}
    properties = {k: v for k, v in (crd.root.get("properties") or {}).items() if k not in outside}
    return metadata_problems(doc.get("metadata")) + structural_problems(body, {**crd.root, "properties": properties})
