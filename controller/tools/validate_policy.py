"""Offline validation of RemediationPolicy manifests (`trm-sre validate-policy`): no cluster needed.

Two layers, in the order the cluster applies them:

1. The CRD's structural schema (crds/remediationpolicy.yaml, openAPIV3Schema):
   types, required fields, enums, bounds, lengths, patterns, item counts, sets
   without duplicates, and unknown fields, which kubectl's default strict field
   validation refuses. `structural_problems` walks exactly the keywords the CRD
   uses (`SCHEMA_KEYWORDS`); it is not a general OpenAPI validator.
2. The operator's own checks (`controller.decision.policy_checks.check_policy`: the pydantic
   model, the runbook catalog, regexes, templates), which decide whether the
   policy becomes Ready and is used.

The CRD's CEL rules (`x-kubernetes-validations`) cannot be evaluated here. The
ones the pydantic model also enforces are listed in `CEL_RULES_ENFORCED_BY_MODEL`;
any other is reported as checked only by the apiserver
(`kubectl apply --dry-run=server`).

Everything here is pure: text or parsed documents in, results out.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from controller.schemas.crd import API_VERSION, GROUP, KIND
from controller.decision.policy_checks import Problem, check_policy

if TYPE_CHECKING:
    from runbooks.catalog import Catalog

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
CEL_RULES_ENFORCED_BY_MODEL: dict[str, str] = {
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


class PolicyInputError(ValueError):
    """A file that cannot be read or parsed as YAML; the message names the file (and the line)."""

    def __init__(self, source: str, reason: str, line: int | None = None) -> None:
        super().__init__(f"{source}:{line}: {reason}" if line else f"{source}: {reason}")
        self.source, self.reason, self.line = source, reason, line


# --------------------------------------------------------------------------
# The CRD
# --------------------------------------------------------------------------


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
        """The model's report of this rule moved to the rule's fieldPath (`spec.actions` -> `...approvalTimeoutSeconds`)."""
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

    @classmethod
    def load(cls, path: Path = DEFAULT_CRD_PATH) -> CrdSchema:
        try:
            text = path.read_text()
        except OSError as exc:
            raise PolicyInputError(str(path), f"cannot read the CRD: {exc.strerror or exc}") from exc
        return cls.from_manifest(parse_yaml(text, str(path))[0], str(path))


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


def _describe(value: Any) -> str:
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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def structural_problems(value: Any, schema: Mapping[str, Any], path: str = "") -> list[Problem]:
    """What the apiserver's schema validation (with strict field validation) refuses in `value`.

    Null values count as absent: the apiserver prunes them from fields that are
    not nullable (none in this CRD is). Paths look like `spec.chain[1].trm.minConfidence`.
    """
    expected = schema.get("type")
    if expected and not _type_ok(value, expected):
        return [Problem(WRONG_TYPE, path, f"must be {expected} (got {_describe(value)})")]
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


def _string_problems(value: str, schema: Mapping[str, Any], path: str) -> list[Problem]:
    problems = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        need = _plural(schema["minLength"], "character")
        problems.append(Problem(BAD_LENGTH, path, f"must be at least {need} long (got {len(value)})"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        need = _plural(schema["maxLength"], "character")
        problems.append(Problem(BAD_LENGTH, path, f"must be at most {need} long (got {len(value)})"))
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        problems.append(Problem(PATTERN_MISMATCH, path, f"must match {schema['pattern']} (got {_shown(value)})"))
    return problems


def _array_problems(value: list[Any], schema: Mapping[str, Any], path: str) -> list[Problem]:
    problems = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        problems.append(
            Problem(
                BAD_ITEM_COUNT, path, f"must have at least {_plural(schema['minItems'], 'item')} (got {len(value)})"
            )
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        problems.append(
            Problem(BAD_ITEM_COUNT, path, f"must have at most {_plural(schema['maxItems'], 'item')} (got {len(value)})")
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


def _metadata_problems(metadata: Any) -> list[Problem]:
    """What the apiserver checks in metadata before any schema: a name and a namespace it can use."""
    if metadata is None:
        return [Problem(REQUIRED, "metadata.name", "required field is missing")]
    if not isinstance(metadata, Mapping):
        return [Problem(WRONG_TYPE, "metadata", f"must be object (got {_describe(metadata)})")]
    problems = []
    name = metadata.get("name")
    if name is None:
        problems.append(Problem(REQUIRED, "metadata.name", "required field is missing"))
    elif not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(
            Problem(INVALID, "metadata.name", f"must be a lowercase RFC 1123 subdomain (got {_describe(name)})")
        )
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace)
    ):
        problems.append(
            Problem(INVALID, "metadata.namespace", f"must be a lowercase RFC 1123 label (got {_describe(namespace)})")
        )
    return problems


def manifest_schema_problems(doc: Mapping[str, Any], crd: CrdSchema) -> list[Problem]:
    """The whole manifest against the CRD: metadata as the apiserver checks it, then the schema.

    `status` is left out: with the status subresource the apiserver ignores it in a manifest.
    """
    outside = ("metadata", "status")
    body = {k: v for k, v in doc.items() if k not in outside}
    properties = {k: v for k, v in (crd.root.get("properties") or {}).items() if k not in outside}
    return _metadata_problems(doc.get("metadata")) + structural_problems(body, {**crd.root, "properties": properties})


# --------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, as strict as kubectl's YAML reader where PyYAML is lax, and as lax where it is strict.

    - A key twice in one mapping is an error (kubectl: "mapping key already defined"); PyYAML keeps the last.
    - A bare `=` (a matcher's op) is the string "=", as in YAML 1.2; PyYAML reads it as the obsolete value tag.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def parse_yaml(text: str, source: str) -> list[Any]:
    """Every document of a (multi-document) YAML text; PolicyInputError naming the line when it does not parse."""
    try:
        return list(yaml.load_all(text, Loader=_Loader))  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}: {problem}" if context else problem
        raise PolicyInputError(
            source, f"not valid YAML ({detail})", mark.line + 1 if mark is not None else None
        ) from exc


Status = Literal["valid", "invalid", "skipped", "error"]


@dataclass(frozen=True)
class DocumentResult:
    """What validation says about one document of one file (`document` counts from 1, `None` for the file)."""

    source: str
    document: int | None
    status: Status
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    schema: tuple[Problem, ...] = ()
    operator: tuple[Problem, ...] = ()
    stages: int | None = None
    allowed_functions: int | None = None
    detail: str = ""
    item: int | None = None  # the index in a v1 List's items
    line: int | None = None  # for an unparsable file: where the YAML breaks

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.schema + self.operator

    @property
    def key(self) -> str:
        return f"{self.namespace or DEFAULT_NAMESPACE}/{self.name or '?'}"

    @property
    def location(self) -> str:
        if self.document is None:
            return self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{self.source}:{self.document}"

    @classmethod
    def failed(cls, error: PolicyInputError) -> DocumentResult:
        """A file that could not be read or parsed."""
        return cls(error.source, None, "error", detail=error.reason, line=error.line)

    def lines(self) -> list[str]:
        """The text report: one line per problem, or one line saying valid, skipped or why the file failed."""
        if self.status == "valid":
            counts = f"{_plural(self.stages or 0, 'stage')}, {_plural(self.allowed_functions or 0, 'allowed function')}"
            return [f"{self.source}: {self.key}: valid ({counts})"]
        if self.status == "skipped":
            shown = f"{self.namespace}/{self.name}" if self.namespace else self.name or "?"
            return [f"{self.location}: {self.kind} {shown}: skipped ({self.detail})"]
        if self.status == "error":
            return [f"{self.location}: {self.detail}"]
        label = f"{self.key}: " if self.kind or self.name else ""
        return [f"{self.location}: {label}{problem if problem.field else problem.message}" for problem in self.problems]

    def as_json(self) -> dict[str, Any]:
        checks = [("schema", p) for p in self.schema] + [("operator", p) for p in self.operator]
        out: dict[str, Any] = {
            "file": self.source,
            "document": self.document,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "status": self.status,
            "problems": [{"field": p.field, "message": p.message, "reason": p.reason, "check": c} for c, p in checks],
        }
        for extra in ("item", "line"):
            if getattr(self, extra) is not None:
                out[extra] = getattr(self, extra)
        if self.status == "valid":
            out |= {"stages": self.stages, "allowedFunctions": self.allowed_functions}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Validator:
    """Validates documents against the CRD (when there is one) and the operator's checks, in that order."""

    catalog: Catalog
    crd: CrdSchema | None = None
    _seen: dict[str, str] = field(default_factory=dict)

    def validate_text(self, text: str, source: str) -> list[DocumentResult]:
        """Every document of a YAML text; an unparsable text gives one `error` result naming the line."""
        try:
            docs = parse_yaml(text, source)
        except PolicyInputError as exc:
            return [DocumentResult.failed(exc)]
        results = []
        for number, doc in enumerate(docs, start=1):
            if doc is not None:  # an empty document (a leading or trailing `---`)
                results += self.validate_document(doc, source, number)
        if not results:  # as `kubectl apply`: "no objects passed to apply"
            return [DocumentResult.failed(PolicyInputError(source, "no objects in it (an empty file?)"))]
        return results

    def validate_document(self, doc: Any, source: str, number: int) -> list[DocumentResult]:
        if isinstance(doc, Mapping) and doc.get("apiVersion") == "v1" and doc.get("kind") == "List":
            items = doc.get("items")
            if isinstance(items, list):
                return [
                    replace(result, item=i)
                    for i, item in enumerate(items)
                    for result in self.validate_document(item, source, number)
                ]
        return [self._one(doc, source, number)]

    def _pinpoint(self, problem: Problem) -> Problem:
        for rule in self.crd.cel_rules if self.crd is not None else ():
            problem = rule.pinpoint(problem)
        return problem

    def _one(self, doc: Any, source: str, number: int) -> DocumentResult:
        if not isinstance(doc, Mapping):
            what = f"not a Kubernetes object (a YAML mapping with apiVersion and kind), got {_describe(doc)}"
            return DocumentResult(source, number, "invalid", schema=(Problem(INVALID, "", what),))
        metadata = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        ident = {
            "kind": kind if isinstance(kind, str) else None,
            "namespace": metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else None,
            "name": metadata.get("name") if isinstance(metadata.get("name"), str) else None,
        }
        head = _head_problems(api_version, kind)
        if head is None:
            return DocumentResult(source, number, "skipped", detail=f"not a {KIND}", **ident)
        if head:
            return DocumentResult(source, number, "invalid", schema=tuple(head), **ident)
        schema = (
            manifest_schema_problems(doc, self.crd) if self.crd is not None else _metadata_problems(doc.get("metadata"))
        )
        namespace, name = ident["namespace"] or DEFAULT_NAMESPACE, ident["name"] or ""
        generation = metadata.get("generation") if isinstance(metadata.get("generation"), int) else 0
        result = check_policy(namespace, name, generation, doc.get("spec"), self.catalog)
        operator = [p for p in map(self._pinpoint, result.problems) if not _covered(p, schema)]
        here = f"{source}:{number}"
        if ident["name"]:
            first = self._seen.setdefault(f"{namespace}/{name}", here)
            if first != here:
                operator.append(
                    Problem(
                        DUPLICATE,
                        "metadata.name",
                        f"{namespace}/{name} is already defined at {first} "
                        "(trm-sre run --policies refuses duplicates; kubectl apply keeps the last)",
                    )
                )
        if schema or operator or result.policy is None:
            return DocumentResult(source, number, "invalid", schema=tuple(schema), operator=tuple(operator), **ident)
        spec = result.policy.spec
        return DocumentResult(
            source, number, "valid", stages=len(spec.chain), allowed_functions=len(spec.allowed_functions), **ident
        )


def _head_problems(api_version: Any, kind: Any) -> list[Problem] | None:
    """apiVersion and kind: None for another group's object (skipped), [] for a RemediationPolicy, else problems."""
    problems = [
        Problem(REQUIRED, name, "required field is missing")
        if value in (None, "")
        else Problem(WRONG_TYPE, name, f"must be string (got {_describe(value)})")
        for name, value in (("apiVersion", api_version), ("kind", kind))
        if not isinstance(value, str) or not value
    ]
    if problems:
        return problems
    if api_version.split("/", 1)[0] != GROUP and kind != KIND:
        return None
    if kind != KIND:
        return [Problem(NOT_SUPPORTED, "kind", f"{GROUP} has no kind {kind!r} (only {KIND})")]
    if api_version != API_VERSION:
        return [Problem(NOT_SUPPORTED, "apiVersion", f"must be {API_VERSION} (got {api_version!r})")]
    return []


def _covered(problem: Problem, schema: Iterable[Problem]) -> bool:
    """The operator's problem repeats one the schema already reported at the same field (or one above it)."""
    return any(problem.field == p.field or problem.field.startswith((p.field + ".", p.field + "[")) for p in schema)
