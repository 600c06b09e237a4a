"""Offline validation of RemediationPolicy manifests (`trm-sre validate-policy`): no cluster needed.

Two layers, in the order the cluster applies them:

1. The CRD's structural schema (crds/remediationpolicy.yaml, openAPIV3Schema),
   checked by `controller.tools.crd_schema`: what kubectl's default strict
   field validation and the apiserver refuse.
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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from controller.decision.policy_checks import Problem, check_policy
from controller.schemas.crd import API_VERSION, GROUP, KIND
from controller.tools.crd_schema import (
    DEFAULT_CRD_PATH,
    DEFAULT_NAMESPACE,
    DUPLICATE,
    INVALID,
    NOT_SUPPORTED,
    REQUIRED,
    WRONG_TYPE,
    CrdSchema,
    PolicyInputError,
    describe_value,
    manifest_schema_problems,
    metadata_problems,
    plural,
)

if TYPE_CHECKING:
    from runbooks.catalog import Catalog

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
            counts = f"{plural(self.stages or 0, 'stage')}, {plural(self.allowed_functions or 0, 'allowed function')}"
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
    #: The controller's namespace: only its policies may target other namespaces or set a sink.
    system_namespace: str | None = "trm-sre"
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
            what = f"not a Kubernetes object (a YAML mapping with apiVersion and kind), got {describe_value(doc)}"
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
            manifest_schema_problems(doc, self.crd) if self.crd is not None else metadata_problems(doc.get("metadata"))
        )
        namespace, name = ident["namespace"] or DEFAULT_NAMESPACE, ident["name"] or ""
        generation = metadata.get("generation") if isinstance(metadata.get("generation"), int) else 0
        # The tenancy rule needs the namespace: a document without one lands where `kubectl apply -n` puts it,
        # and the operator checks it there (Ready=False, reason NamespaceScope).
        tenancy = self.system_namespace if ident["namespace"] else None
        result = check_policy(namespace, name, generation, doc.get("spec"), self.catalog, system_namespace=tenancy)
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
        else Problem(WRONG_TYPE, name, f"must be string (got {describe_value(value)})")
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


def load_crd(path: Path | None = None) -> CrdSchema:
    """The CRD at `path` (default: the one shipped with trm-sre); PolicyInputError when unreadable or not it."""
    path = path or DEFAULT_CRD_PATH
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyInputError(str(path), f"cannot read the CRD: {exc.strerror or exc}") from exc
    return CrdSchema.from_manifest(parse_yaml(text, str(path))[0], str(path))
