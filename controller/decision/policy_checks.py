"""What the CRD's schema and CEL rules cannot check about a RemediationPolicy.

One function, `check_policy`, used by both the operator (it decides whether a
policy enters the index and what its Ready condition says) and the offline
`trm-sre validate-policy`, so the two can never disagree. Pure: a spec
mapping and the catalog in, a usable `Policy` or field-addressed `Problem`s out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from controller.decision.templates import check_template
from controller.schemas.policy import Policy, PolicySpec

if TYPE_CHECKING:
    from runbooks.catalog import Catalog, Parameter

REASON_UNKNOWN_FUNCTION = "UnknownFunction"
REASON_UNKNOWN_PARAMETER = "UnknownParameter"
REASON_INVALID_REGEX = "InvalidRegex"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_NAMESPACE_SCOPE = "NamespaceScope"


@dataclass(frozen=True)
class Problem:
    """One reason a policy cannot be used, with the field it is about (`spec.chain[1].rules[0].function`)."""

    reason: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class CheckResult:
    """A usable `Policy`, or the problems that make it unusable (never both)."""

    policy: Policy | None
    problems: tuple[Problem, ...] = ()
    spec: PolicySpec | None = None  # parsed even when the catalog rejects it, for mode and counts


def _rule_path(stage_index: int, rule_index: int) -> str:
    return f"spec.chain[{stage_index}].rules[{rule_index}]"


def _matches_in(spec: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """Every `match` block with its path: the policy's and each rule's."""
    if isinstance(spec.get("match"), Mapping):
        yield "spec.match", spec["match"]
    for i, j, rule in _rules_in(spec):
        if isinstance(rule.get("match"), Mapping):
            yield f"{_rule_path(i, j)}.match", rule["match"]


def _rules_in(spec: Mapping[str, Any]) -> Iterable[tuple[int, int, Mapping[str, Any]]]:
    chain = spec.get("chain")
    for i, stage in enumerate(chain if isinstance(chain, list) else ()):
        rules = stage.get("rules") if isinstance(stage, Mapping) else None
        for j, rule in enumerate(rules if isinstance(rules, list) else ()):
            if isinstance(rule, Mapping):
                yield i, j, rule


def _regex_error(pattern: Any) -> str | None:
    if not isinstance(pattern, str):
        return None
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression {pattern[:80]!r}: {exc}"
    return None


def regex_problems(spec: Mapping[str, Any]) -> list[Problem]:
    """Regexes that do not compile (alertNameRegex, =~ and !~ matchers), in the policy's and the rules' match."""
    problems = []
    for path, match in _matches_in(spec):
        error = _regex_error(match.get("alertNameRegex"))
        if error:
            problems.append(Problem(REASON_INVALID_REGEX, f"{path}.alertNameRegex", error))
        matchers = match.get("matchers")
        for k, matcher in enumerate(matchers if isinstance(matchers, list) else ()):
            if isinstance(matcher, Mapping) and matcher.get("op") in ("=~", "!~"):
                error = _regex_error(matcher.get("value", ""))
                if error:
                    problems.append(Problem(REASON_INVALID_REGEX, f"{path}.matchers[{k}].value", error))
    return problems


def catalog_problems(spec: Mapping[str, Any], catalog: Catalog) -> list[Problem]:
    """Functions unknown to the runbook catalog, rule parameters the function lacks, literal values it refuses."""
    problems = []
    known = ", ".join(catalog.names)
    allowed_raw = spec.get("allowedFunctions")
    allowed = [f for f in allowed_raw if isinstance(f, str)] if isinstance(allowed_raw, list) else []
    for k, name in enumerate(allowed):
        if name not in catalog:
            problems.append(
                Problem(
                    REASON_UNKNOWN_FUNCTION,
                    f"spec.allowedFunctions[{k}]",
                    f"{name!r} is not in the runbook catalog ({known})",
                )
            )
    for i, j, rule in _rules_in(spec):
        problems += _rule_problems(_rule_path(i, j), rule, catalog, allowed, known)
    return problems


def _rule_problems(
    path: str, rule: Mapping[str, Any], catalog: Catalog, allowed: list[str], known: str
) -> list[Problem]:
    function = rule.get("function")
    if not isinstance(function, str):
        return []  # the schema requires it; pydantic reports the shape
    runbook = catalog.get(function)
    if runbook is None:
        message = f"{function!r} is not in the runbook catalog ({known})"
        return [Problem(REASON_UNKNOWN_FUNCTION, f"{path}.function", message)]
    problems = []
    if function not in allowed:
        problems.append(Problem(REASON_INVALID_SPEC, f"{path}.function", f"{function} is not in spec.allowedFunctions"))
    parameters = rule.get("parameters")
    for name, template in parameters.items() if isinstance(parameters, Mapping) else ():
        param = runbook.parameter(name)
        where = f"{path}.parameters.{name}"
        if param is None:
            names = ", ".join(p.name for p in runbook.parameters)
            message = f"{function} has no parameter {name!r} (it has {names})"
            problems.append(Problem(REASON_UNKNOWN_PARAMETER, where, message))
        elif isinstance(template, str):
            refused = _template_problem(template, param)
            if refused:
                problems.append(Problem(REASON_INVALID_SPEC, where, refused))
    return problems


def _template_problem(template: str, param: Parameter) -> str | None:
    """Why a rule's parameter template can never render a valid value (the rules stage's own parser decides)."""
    malformed = check_template(template)
    if malformed:
        return f"invalid template: {malformed}"
    if "{{" not in template:
        # A literal is known now: check it as the runbook will at decision time.
        return param.check(template)[1]
    return None


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def schema_problems(spec: Mapping[str, Any]) -> tuple[PolicySpec | None, list[Problem]]:
    """Parse with the pydantic model; its errors become InvalidSpec problems naming the field."""
    try:
        return PolicySpec.model_validate(spec), []
    except ValidationError as exc:
        problems = []
        errors = exc.errors()
        inner = [tuple(e["loc"]) for e in errors]
        for error in errors:
            loc = tuple(error["loc"])
            if error["type"] == "too_short" and any(len(o) > len(loc) and o[: len(loc)] == loc for o in inner):
                continue  # pydantic counts only the valid items: "0 items" echoes the errors inside
            message = str(error["msg"]).removeprefix("Value error, ")
            reason = REASON_INVALID_REGEX if "regex" in message else REASON_INVALID_SPEC
            problems.append(Problem(reason, _field_path(tuple(error["loc"])), message))
        return None, problems


def scope_problems(namespace: str, spec: Mapping[str, Any], system_namespace: str | None) -> list[Problem]:
    """The tenancy rule (as Flux and Argo CD): only the controller's own namespace may reach beyond itself.

    A policy in the system namespace may target any namespace and set a sink.
    A policy in any other namespace acts only on alerts from its own namespace
    (the index enforces that), may target only it, and cannot set a sink.
    None: no rule (a caller that does not know the system namespace).
    """
    if system_namespace is None or namespace == system_namespace:
        return []
    problems = []
    targets = spec.get("targetNamespaces")
    if isinstance(targets, list):
        for i, target in enumerate(targets):
            if target != namespace:
                problems.append(
                    Problem(
                        REASON_NAMESPACE_SCOPE,
                        f"spec.targetNamespaces[{i}]",
                        f"a policy in namespace {namespace} may only target {namespace} (got {str(target)[:80]!r}); "
                        f"only policies in the controller's namespace ({system_namespace}) may target others",
                    )
                )
    actions = spec.get("actions")
    if isinstance(actions, Mapping) and actions.get("sink") is not None:
        problems.append(
            Problem(
                REASON_NAMESPACE_SCOPE,
                "spec.actions.sink",
                f"a policy in namespace {namespace} cannot set a sink; only policies in the controller's "
                f"namespace ({system_namespace}) may",
            )
        )
    return problems


def check_policy(
    namespace: str, name: str, generation: int, spec: Any, catalog: Catalog, *, system_namespace: str | None = None
) -> CheckResult:
    """Validate a policy as the decision path will use it; never raises on bad input.

    `system_namespace`: the controller's own namespace, for the tenancy rule (`scope_problems`).
    """
    if not isinstance(spec, Mapping):
        return CheckResult(None, (Problem(REASON_INVALID_SPEC, "spec", "spec is missing or not an object"),))
    regex = regex_problems(spec)
    parsed, schema = schema_problems(spec)
    if regex:  # already reported precisely; pydantic would repeat them less precisely
        schema = [p for p in schema if p.reason != REASON_INVALID_REGEX]
    by_catalog = catalog_problems(spec, catalog)
    if any(p.field.endswith(".function") for p in by_catalog):
        # The per-rule check names the exact rule; drop PolicySpec's whole-spec repeat of it.
        schema = [p for p in schema if "must also be listed in allowedFunctions" not in p.message]
    problems = (*regex, *by_catalog, *schema, *scope_problems(namespace, spec, system_namespace))
    if problems or parsed is None:
        return CheckResult(None, problems, parsed)
    return CheckResult(Policy(namespace=namespace, name=name, generation=generation, spec=parsed), (), parsed)
