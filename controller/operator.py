"""The kopf operator: keeps the policy index in step with the RemediationPolicies in the cluster.

Two handlers, both thin; the work is in the plain functions below them:

- `on_policy_event` (``@kopf.on.event``) sees every watch event, including the
  initial listing and DELETED. It validates the policy (`check_policy`), puts it
  in the `PolicyIndex` or takes it out, and writes the validation part of
  `.status` (observedGeneration, mode, allowedFunctionCount, the Ready
  condition) only when it differs from what is there, so its own status write
  comes back as one more event that changes nothing. Level-triggered like this,
  it needs no kopf progress state and no finalizer to notice deletion: the
  DELETED event (or an earlier deletionTimestamp) removes the policy.
- `flush_status` (``@kopf.timer``, every few seconds) copies what the
  decision path recorded in `PolicyStatusRecorder` into `.status.counters` and
  `.status.lastDecision` (again only when changed) and posts the recorded
  decisions as Kubernetes Events.

Timers are the one thing here that needs a finalizer: kopf must stop a
policy's timer before the object disappears, so it adds
`remediation.homelab.io/operator` to each policy and removes it as soon as the
policy is deleted (there are no on-delete handlers to wait for). If the
operator is uninstalled first, delete the policies before it, or strip the
finalizer by hand.

kopf keeps what little state it has in annotations under
`remediation.homelab.io/` (never in `.status`), so the status schema stays
strict and status writes never look like spec changes to kopf.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import kopf
from pydantic import ValidationError

from controller.schemas.policy import Policy, PolicySpec
from controller.status import PolicyStatusRecorder, rfc3339

if TYPE_CHECKING:
    from controller.policy_index import PolicyIndex
    from runbooks.catalog import Catalog

log = logging.getLogger(__name__)

GROUP = "remediation.homelab.io"
VERSION = "v1alpha1"
PLURAL = "remediationpolicies"
#: kopf's finalizer (needed only by the status timer; see the module docstring).
FINALIZER = f"{GROUP}/operator"
#: How often recorded decisions are written to `.status` and posted as Events (seconds).
STATUS_FLUSH_SECONDS = 5.0

READY = "Ready"
REASON_INDEXED = "Indexed"
REASON_UNKNOWN_FUNCTION = "UnknownFunction"
REASON_UNKNOWN_PARAMETER = "UnknownParameter"
REASON_INVALID_REGEX = "InvalidRegex"
REASON_INVALID_SPEC = "InvalidSpec"
#: Longest condition message written (the CRD allows 32 KiB; a page of problems is enough).
MAX_MESSAGE = 4096

# --------------------------------------------------------------------------
# Validation: what the CRD's schema and CEL rules cannot check
# --------------------------------------------------------------------------


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
                Problem(REASON_UNKNOWN_FUNCTION, f"spec.allowedFunctions[{k}]", f"{name!r} is not in the runbook catalog ({known})")
            )
    for i, j, rule in _rules_in(spec):
        problems += _rule_problems(_rule_path(i, j), rule, catalog, allowed, known)
    return problems


def _rule_problems(path: str, rule: Mapping[str, Any], catalog: Catalog, allowed: list[str], known: str) -> list[Problem]:
    function = rule.get("function")
    if not isinstance(function, str):
        return []  # the schema requires it; pydantic reports the shape
    runbook = catalog.get(function)
    if runbook is None:
        return [Problem(REASON_UNKNOWN_FUNCTION, f"{path}.function", f"{function!r} is not in the runbook catalog ({known})")]
    problems = []
    if function not in allowed:
        problems.append(Problem(REASON_INVALID_SPEC, f"{path}.function", f"{function} is not in spec.allowedFunctions"))
    parameters = rule.get("parameters")
    for name, template in (parameters.items() if isinstance(parameters, Mapping) else ()):
        param = runbook.parameter(name)
        where = f"{path}.parameters.{name}"
        if param is None:
            names = ", ".join(p.name for p in runbook.parameters)
            problems.append(Problem(REASON_UNKNOWN_PARAMETER, where, f"{function} has no parameter {name!r} (it has {names})"))
        elif isinstance(template, str) and "{{" not in template:
            # A literal is known now: check it as the runbook will at decision time.
            _, refused = param.check(template)
            if refused:
                problems.append(Problem(REASON_INVALID_SPEC, where, refused))
    return problems


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


def check_policy(namespace: str, name: str, generation: int, spec: Any, catalog: Catalog) -> CheckResult:
    """Validate a policy as the decision path will use it; never raises on bad input."""
    if not isinstance(spec, Mapping):
        return CheckResult(None, (Problem(REASON_INVALID_SPEC, "spec", "spec is missing or not an object"),))
    regex = regex_problems(spec)
    parsed, schema = schema_problems(spec)
    if regex:  # already reported precisely; pydantic would repeat them less precisely
        schema = [p for p in schema if p.reason != REASON_INVALID_REGEX]
    problems = (*regex, *catalog_problems(spec, catalog), *schema)
    if problems or parsed is None:
        return CheckResult(None, problems, parsed)
    return CheckResult(Policy(namespace=namespace, name=name, generation=generation, spec=parsed), (), parsed)


# --------------------------------------------------------------------------
# Status: what to write, and only what changed
# --------------------------------------------------------------------------


def _mode_of(result: CheckResult, spec: Any) -> str | None:
    if result.spec is not None:
        return result.spec.actions.mode
    actions = spec.get("actions") if isinstance(spec, Mapping) else None
    if not isinstance(actions, Mapping):
        return None
    if actions.get("dryRun") is True:
        return "dry-run"
    return "approval" if actions.get("requireApproval") is True else "active"


def ready_condition(result: CheckResult, generation: int, previous: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The Ready condition; lastTransitionTime moves only when the status flips, as Kubernetes conventions say."""
    if result.policy is not None:
        status, reason = "True", REASON_INDEXED
        spec = result.policy.spec
        stages = " -> ".join(stage.kind for stage in spec.chain)
        message = f"indexed generation {generation}: {len(spec.allowed_functions)} functions, chain {stages}"
    else:
        status, reason = "False", result.problems[0].reason
        message = "; ".join(str(p) for p in result.problems)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
    unchanged = previous is not None and previous.get("status") == status and previous.get("lastTransitionTime")
    return {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": previous["lastTransitionTime"] if unchanged else rfc3339(now),  # type: ignore[index]
        "observedGeneration": generation,
    }


def find_condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, list) else ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def validation_status(
    result: CheckResult, spec: Any, generation: int, current: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The status fields the event handler owns (the timer owns counters and lastDecision)."""
    allowed = spec.get("allowedFunctions") if isinstance(spec, Mapping) else None
    ready = ready_condition(result, generation, find_condition(current, READY), now)
    others = [c for c in current.get("conditions") or () if isinstance(c, Mapping) and c.get("type") != READY]
    return {
        "observedGeneration": generation,
        "mode": _mode_of(result, spec),
        "allowedFunctionCount": len(allowed) if isinstance(allowed, list) else 0,
        "conditions": [*others, ready],
    }


def merge_patch_for(current: Any, desired: Any) -> Any:
    """The JSON merge patch that turns `current` into `desired` (None = remove a key), or ... when equal.

    Nested objects are patched key by key, so a key that disappeared (e.g. the
    `function` of a last decision that escalated) is removed rather than kept.
    """
    if current == desired:
        return ...
    if isinstance(current, Mapping) and isinstance(desired, Mapping):
        patch = {}
        for key in set(current) | set(desired):
            if key not in desired:
                patch[key] = None
            else:
                sub = merge_patch_for(current.get(key), desired[key])
                if sub is not ...:
                    patch[key] = sub
        return patch
    return desired


def status_changes(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level status fields to patch so that `desired` holds; fields not in `desired` are left alone."""
    changes = {}
    for key, value in desired.items():
        if value is None and key not in current:
            continue
        patch = merge_patch_for(current.get(key), value)
        if patch is not ...:
            changes[key] = patch
    return changes


def apply_status(patch: kopf.Patch, changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        patch.status[key] = value


# --------------------------------------------------------------------------
# Handlers (thin) and their registry
# --------------------------------------------------------------------------


def policy_key(namespace: str | None, name: str | None) -> str:
    return f"{namespace}/{name}"


@dataclass
class PolicyHandlers:
    """The handlers' shared objects; methods are registered on a fresh kopf registry by `build_registry`."""

    index: PolicyIndex
    recorder: PolicyStatusRecorder
    catalog: Catalog
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # (status, reason, message) of the last Ready Event posted per policy; only touched in kopf's event loop.
    _announced: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    async def on_policy_event(
        self, event: Mapping[str, Any], body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any
    ) -> None:
        """Index, re-index or drop the policy; write its Ready condition when it changed."""
        key = policy_key(body.metadata.namespace, body.metadata.name)
        if event.get("type") == "DELETED":
            self.index.remove(key)
            self.recorder.forget(key)
            self._announced.pop(key, None)
            logger.info("policy %s deleted: removed from the index", key)
            return
        if body.metadata.get("deletionTimestamp"):
            self.index.remove(key)  # a policy on its way out must not remediate anything more
            return
        status = body.get("status") or {}
        self.recorder.seed(key, status.get("counters"), status.get("lastDecision"))
        generation = int(body.metadata.get("generation") or 0)
        result = check_policy(body.metadata.namespace or "", body.metadata.name or "", generation, body.get("spec"), self.catalog)
        self._update_index(key, result, logger)
        desired = validation_status(result, body.get("spec"), generation, status, self.clock())
        changes = status_changes(status, desired)
        apply_status(patch, changes)
        if "conditions" in changes:
            self._announce(key, body, desired["conditions"][-1], find_condition(status, READY))

    def _update_index(self, key: str, result: CheckResult, logger: logging.Logger) -> None:
        if result.policy is not None:
            self.index.upsert(result.policy)  # a no-op when nothing changed
        elif self.index.get(key) is not None:
            self.index.remove(key)
            logger.warning("policy %s removed from the index: %s", key, "; ".join(map(str, result.problems)))

    def _announce(self, key: str, body: kopf.Body, ready: Mapping[str, Any], previous: Mapping[str, Any] | None) -> None:
        """One Event per change of the Ready condition, not per watch event.

        kopf writes the finalizer and the status in two requests, so the same
        change can be seen twice before the new status is visible; remembering
        what was announced keeps that to one Event.
        """
        fingerprint = (ready["status"], ready["reason"], ready["message"])
        if previous is not None and (previous.get("status"), previous.get("reason"), previous.get("message")) == fingerprint:
            return
        if self._announced.get(key) == fingerprint:
            return
        self._announced[key] = fingerprint
        event_type = "Normal" if ready["status"] == "True" else "Warning"
        kopf.event(body, type=event_type, reason=ready["reason"], message=ready["message"])

    async def flush_status(self, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        """Write recorded counters and the last decision to `.status`; post the recorded decisions as Events."""
        key = policy_key(body.metadata.namespace, body.metadata.name)
        status = body.get("status") or {}
        self.recorder.seed(key, status.get("counters"), status.get("lastDecision"))  # no-op once seeded
        apply_status(patch, status_changes(status, self.recorder.snapshot(key)))
        for item in self.recorder.drain_events(key):
            kopf.event(body, type=item.type, reason=item.reason, message=item.message)

    async def probe_index(self, **_: Any) -> dict[str, int]:
        """Shown by the liveness endpoint: how many policies are indexed."""
        return {"policies": len(self.index), "version": self.index.version}


async def configure_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's state out of `.status` and name what it writes after us (a startup handler).

    Runs inside `kopf.operator`, after any `settings_hook`, because these must
    match the CRD (strict status schema) whatever else is tuned.
    """
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "trm-sre"
    settings.posting.event_name_prefix = "trm-sre-"


def build_registry(
    index: PolicyIndex,
    recorder: PolicyStatusRecorder,
    catalog: Catalog,
    *,
    status_flush_seconds: float = STATUS_FLUSH_SECONDS,
) -> kopf.OperatorRegistry:
    """A fresh kopf registry with the policy handlers (never kopf's global default registry)."""
    registry = kopf.OperatorRegistry()
    handlers = PolicyHandlers(index=index, recorder=recorder, catalog=catalog)
    kopf.on.startup(registry=registry, id="configure")(configure_settings)
    # A fresh registry has none of kopf's default logins: use the kubernetes
    # client's (in-cluster service account, else KUBECONFIG / ~/.kube/config),
    # as `kopf run` would.
    kopf.on.login(registry=registry, id="login")(kopf.login_via_client)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="index")(handlers.on_policy_event)
    kopf.timer(
        GROUP, VERSION, PLURAL, registry=registry, id="status", interval=status_flush_seconds,
    )(handlers.flush_status)
    kopf.on.probe(registry=registry, id="index")(handlers.probe_index)
    return registry


class _QuietRoutineSuccess(logging.Filter):
    """Drop kopf's "... succeeded." lines for the two routine handlers.

    The event handler runs on every watch event and the timer every few
    seconds for every policy; their successes say nothing, failures still log.
    """

    ROUTINE = ("Handler 'index' succeeded", "Timer 'status' succeeded")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and str(record.msg).startswith(self.ROUTINE))


def default_settings() -> kopf.OperatorSettings:
    """kopf settings for this operator (watch timeouts so a dead connection is noticed and replaced)."""
    settings = kopf.OperatorSettings()
    # Restart each watch at least every 10 minutes; kopf also reconnects after
    # 70 s without any event or bookmark, and retries failed requests with backoff.
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.reporting_instance = socket.gethostname()
    return settings


async def run_operator(
    registry: kopf.OperatorRegistry,
    *,
    namespaces: list[str] | None,
    stop_flag: asyncio.Event,
    liveness_endpoint: str | None = None,
    settings_hook: Callable[[kopf.OperatorSettings], None] | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator in the current event loop until `stop_flag` is set.

    `namespaces=None` (or empty) watches the whole cluster; otherwise only the
    listed namespaces (exact names or kopf globs; globs need list/watch on
    namespaces). Standalone: one replica, no peering objects. `liveness_endpoint`
    (e.g. ``http://0.0.0.0:8081/healthz``) serves kopf's liveness probe.
    `stop_flag` may also be a `threading.Event` (kopf accepts both).
    """
    settings = default_settings()
    if settings_hook is not None:
        settings_hook(settings)
    quiet = _QuietRoutineSuccess()
    objects_log = logging.getLogger("kopf.objects")
    objects_log.addFilter(quiet)
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces or (),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            liveness_endpoint=liveness_endpoint,
        )
    finally:
        objects_log.removeFilter(quiet)
