"""The runbook catalog: the one source of remediation functions.

Every runbook YAML in this folder describes one remediation function: its name,
what it does, when to use it, its parameters with their validation, and which
alert labels usually carry each parameter. Everything else is generated from
here, never typed twice: the controller's function registry, the TRM's output
vocabulary, the function-calling tool schemas, the parameter validation, and
the CRD's allowed-function check in the operator.

This module is deliberately free of controller and model code so that both the
controller (`controller/`) and the model (`models/`) can import it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CATALOG_DIR = Path(__file__).resolve().parent

# Kubernetes naming rules (k8s.io/apimachinery/pkg/util/validation). Always `fullmatch`:
# with `match`, `$` also matches before a final "\n", so "cart\n" would pass as a name.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

Validation = Literal["dns1123-label", "dns1123-subdomain", "label-selector"]


def is_dns1123_label(value: str) -> bool:
    """A namespace or a Service name: at most 63 lowercase alphanumerics and '-'."""
    return len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1123_subdomain(value: str) -> bool:
    """Most object names (pods, deployments, PVCs): dot-separated DNS labels, at most 253."""
    return 0 < len(value) <= 253 and all(is_dns1123_label(part) for part in value.split("."))


def _is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(_LABEL_KEY_NAME.fullmatch(name))


def is_label_selector(value: str) -> bool:
    """Equality-based selectors only (`a=b,c==d,e!=f`): enough to look pods up, nothing to inject."""
    if not value or len(value) > 1024:
        return False
    for term in value.split(","):
        key, op, val = re.split(r"(==|!=|=)", term, maxsplit=1) if re.search("=", term) else (term, "", "")
        if not op or not _is_label_key(key) or len(val) > 63 or not _LABEL_VALUE.fullmatch(val):
            return False
    return True


VALIDATORS = {
    "dns1123-label": is_dns1123_label,
    "dns1123-subdomain": is_dns1123_subdomain,
    "label-selector": is_label_selector,
}


class InvalidCall(ValueError):
    """A proposed function call that does not fit the catalog; `reasons` says every way it does not."""

    def __init__(self, function: str | None, reasons: list[str]) -> None:
        super().__init__(f"{function or '<none>'}: " + "; ".join(reasons))
        self.function = function
        self.reasons = reasons


class Parameter(BaseModel):
    """One parameter of a remediation function."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["string", "integer"]
    required: bool = False
    default: str | int | None = None
    description: str
    validation: Validation | None = None
    enum: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 253
    # Alert label names that usually carry this parameter, best first.
    sources: tuple[str, ...] = ()

    def check(self, value: Any) -> tuple[str | int | None, str | None]:
        """Coerce and validate one value: (clean value, None) or (None, the reason it is refused)."""
        if self.type == "integer":
            if isinstance(value, bool):
                return None, f"{self.name} must be an integer"
            if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value, flags=re.ASCII):
                value = int(value)
            if not isinstance(value, int):
                return None, f"{self.name} must be an integer"
            if self.minimum is not None and value < self.minimum:
                return None, f"{self.name} must be >= {self.minimum}"
            if self.maximum is not None and value > self.maximum:
                return None, f"{self.name} must be <= {self.maximum}"
            return value, None
        if not isinstance(value, str):
            return None, f"{self.name} must be a string"
        if len(value) > self.max_length:
            return None, f"{self.name} is longer than {self.max_length} characters"
        if self.enum is not None and value not in self.enum:
            return None, f"{self.name} must be one of {', '.join(self.enum)}"
        if self.validation is not None and not VALIDATORS[self.validation](value):
            return None, f"{self.name} {value[:64]!r} is not a valid {self.validation}"
        return value, None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.default is not None:
            schema["default"] = self.default
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.type == "string":
            schema["maxLength"] = self.max_length
        return schema


class When(BaseModel):
    """When the runbook applies: read by humans, the data generator and the LLM's tool description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symptoms: tuple[str, ...]
    alert_families: tuple[str, ...]
    resource_kind: str | None = None


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, str | int]


class Runbook(BaseModel):
    """One remediation function."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    risk: Literal["none", "low", "medium", "high"]
    when: When
    parameters: tuple[Parameter, ...]
    # Groups of parameters of which at least one must be given (pod-check-status: name or selector).
    requires_one_of: tuple[tuple[str, ...], ...] = ()
    examples: tuple[Example, ...] = ()

    @model_validator(mode="after")
    def _check_shape(self) -> Runbook:
        if not is_dns1123_label(self.name):
            raise ValueError(f"function name {self.name!r} must be a DNS-1123 label")
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate parameter names")
        for group in self.requires_one_of:
            unknown = set(group) - set(names)
            if unknown:
                raise ValueError(f"{self.name}: requires_one_of names unknown parameters {sorted(unknown)}")
        return self

    @property
    def read_only(self) -> bool:
        return self.risk == "none"

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def validate_parameters(self, raw: Mapping[str, Any]) -> dict[str, str | int]:
        """Fill defaults, coerce and validate; raise InvalidCall naming every problem."""
        reasons: list[str] = []
        known = {p.name for p in self.parameters}
        reasons += [f"unknown parameter {k[:64]!r}" for k in raw if k not in known]
        clean: dict[str, str | int] = {}
        for param in self.parameters:
            value = raw.get(param.name)
            if value is None or value == "":
                if param.default is not None:
                    clean[param.name] = param.default
                elif param.required:
                    reasons.append(f"missing required parameter {param.name}")
                continue
            checked, reason = param.check(value)
            if reason is not None:
                reasons.append(reason)
            elif checked is not None:
                clean[param.name] = checked
        for group in self.requires_one_of:
            if not any(name in clean for name in group):
                reasons.append("one of " + " or ".join(group) + " is required")
        if reasons:
            raise InvalidCall(self.name, reasons)
        return clean

    def tool_schema(self) -> dict[str, Any]:
        """OpenAI / Ollama `tools` entry."""
        required = [p.name for p in self.parameters if p.required]
        text = self.description + " Use when: " + "; ".join(self.when.symptoms)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": text,
                "parameters": {
                    "type": "object",
                    "properties": {p.name: p.json_schema() for p in self.parameters},
                    "required": required,
                    "additionalProperties": False,
                },
            },
        }


class Catalog(BaseModel):
    """The set of runbooks, sorted by name. `hash` ties a model checkpoint to the catalog it learned."""

    model_config = ConfigDict(frozen=True)

    functions: tuple[Runbook, ...]

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        names = [f.name for f in self.functions]
        if len(set(names)) != len(names):
            raise ValueError("duplicate function names in the catalog")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.functions)

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def get(self, name: str) -> Runbook | None:
        return next((f for f in self.functions if f.name == name), None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def validate_call(
        self, function: str, parameters: Mapping[str, Any], allowed: Iterable[str] | None = None
    ) -> dict[str, str | int]:
        """Check a proposed call against the catalog and (optionally) an allow-list; clean parameters or InvalidCall."""
        runbook = self.get(function)
        if runbook is None:
            raise InvalidCall(function, [f"{function[:64]!r} is not a function in the runbook catalog"])
        if allowed is not None and function not in set(allowed):
            raise InvalidCall(function, [f"{function} is not allowed by the policy"])
        return runbook.validate_parameters(parameters)

    def tool_schemas(self, allowed: Iterable[str] | None = None) -> list[dict[str, Any]]:
        keep = set(self.names if allowed is None else allowed)
        return [f.tool_schema() for f in self.functions if f.name in keep]


def load_catalog_from(directory: Path) -> Catalog:
    """Read every *.yaml in `directory`; a malformed runbook fails loudly, naming its file."""
    runbooks = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            runbooks.append(Runbook.model_validate(yaml.safe_load(path.read_text())))
        except Exception as exc:  # re-raised with the file name: the only useful context
            raise ValueError(f"invalid runbook {path}: {exc}") from exc
    if not runbooks:
        raise ValueError(f"no runbooks (*.yaml) found in {directory}")
    return Catalog(functions=tuple(sorted(runbooks, key=lambda r: r.name)))


@cache
def default_catalog() -> Catalog:
    """The catalog shipped in this folder (cached: it is read on every decision path)."""
    return load_catalog_from(CATALOG_DIR)
