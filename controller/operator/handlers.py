"""The kopf operator: keeps the policy index in step with the RemediationPolicies in the cluster.

kopf does the watching (listing, reconnecting, backing off); the handlers are
thin and the work is in the plain functions below them:

- `on_policy_event` (``@kopf.on.event``) sees every watch event, including the
  initial listing and DELETED. It validates the policy (`check_policy`), puts it
  in the `PolicyIndex` or takes it out, and hands the validation part of
  `.status` (observedGeneration, mode, allowedFunctionCount, the Ready
  condition) to `PolicyStatusSync`, which writes it only when it differs. Being
  level-triggered, it needs no kopf progress state and no finalizer: the
  DELETED event (or an earlier deletionTimestamp) removes the policy, and
  deleting a policy never waits for the operator.
- Every object the handler is done with (indexed, refused as invalid, or
  removed) is reported to the `IndexSync` (controller/operator/readiness.py), which
  keeps the process not ready until every policy that exists has been
  handled.
- `PolicyStatusSync` (controller/engine/policy_stats.py) is the only writer: one task,
  started and stopped with the operator, that writes status and posts Events
  for every policy and retries what failed on its next tick.

So kopf writes nothing to the objects: no finalizer, no annotations, nothing in
`.status`; the status schema stays strict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import kopf

from controller.decision.policy_checks import CheckResult, check_policy
from controller.engine.policy_stats import PolicyEvent, PolicyStatusRecorder, rfc3339
from controller.engine.replicas import Singleton
from controller.operator.readiness import is_namespace_pattern
from controller.operator.status import KubernetesStatusWriter, ObjectRef, PolicyStatusSync, StatusWriter
from controller.schemas.crd import GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    from controller.decision.policy_index import PolicyIndex
    from controller.operator.readiness import IndexSync
    from runbooks.catalog import Catalog

#: How often recorded decisions are written to `.status` and posted as Events (seconds).
STATUS_FLUSH_SECONDS = 5.0

READY = "Ready"
#: Annotation that closes a function's circuit breaker by hand (controller/engine/outcomes.py).
RESET_CIRCUIT_ANNOTATION = f"{GROUP}/reset-circuit"
REASON_INDEXED = "Indexed"
#: Longest condition message written (the CRD allows 32 KiB; a page of problems is enough).
MAX_MESSAGE = 4096


# --------------------------------------------------------------------------
# Status: the validation part (the sync writes it only where it differs)
# --------------------------------------------------------------------------


def _mode_of(result: CheckResult, spec: Any) -> str | None:
    if result.spec is not None:
        return result.spec.status_mode
    if isinstance(spec, Mapping) and spec.get("mode") == "Shadow":
        return "shadow"
    actions = spec.get("actions") if isinstance(spec, Mapping) else None
    if not isinstance(actions, Mapping):
        return None
    if actions.get("dryRun") is True:
        return "dry-run"
    return "approval" if actions.get("requireApproval") is True else "active"


def ready_condition(
    result: CheckResult, generation: int, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The Ready condition; lastTransitionTime moves only when the status flips, as Kubernetes conventions say."""
    if result.policy is not None:
        status, reason = "True", REASON_INDEXED
        spec = result.policy.spec
        stages = " -> ".join(stage.kind for stage in spec.chain)
        count = len(spec.allowed_functions)
        message = f"indexed generation {generation}: {count} function{'s' if count != 1 else ''}, chain {stages}"
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
    """The status fields the watch handler owns (counters and lastDecision come from the recorder)."""
    allowed = spec.get("allowedFunctions") if isinstance(spec, Mapping) else None
    ready = ready_condition(result, generation, find_condition(current, READY), now)
    others = [c for c in current.get("conditions") or () if isinstance(c, Mapping) and c.get("type") != READY]
    return {
        "observedGeneration": generation,
        "mode": _mode_of(result, spec),
        "allowedFunctionCount": len(allowed) if isinstance(allowed, list) else 0,
        "conditions": [*others, ready],
    }


# --------------------------------------------------------------------------
# Handlers (thin) and their registry
# --------------------------------------------------------------------------


def ref_of(body: kopf.Body) -> ObjectRef:
    return ObjectRef(
        namespace=body.metadata.namespace or "",
        name=body.metadata.name or "",
        uid=body.metadata.uid or "",
        api_version=body.get("apiVersion") or f"{GROUP}/{VERSION}",
    )


def ready_event(ready: Mapping[str, Any], previous: Mapping[str, Any] | None) -> PolicyEvent | None:
    """An Event when the Ready condition says something new (status, reason or message), else None."""
    if previous is not None and all(previous.get(k) == ready[k] for k in ("status", "reason", "message")):
        return None
    return PolicyEvent("Normal" if ready["status"] == "True" else "Warning", ready["reason"], ready["message"])


@dataclass
class PolicyHandlers:
    """The handlers' shared objects; methods are registered on a fresh kopf registry by `build_registry`."""

    index: PolicyIndex
    recorder: PolicyStatusRecorder
    catalog: Catalog
    sync: PolicyStatusSync
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    #: Told about every policy handled, for readiness (None: nobody asks).
    index_sync: IndexSync | None = None
    #: Replicas on a shared store: only the holder of this lock writes status (None: this process always does).
    status_singleton: Singleton | None = None
    #: Closes a circuit breaker by hand: (policy key, function, annotation value) -> reset? (None: not wired).
    reset_circuit: Callable[[str, str, str], bool] | None = None
    _sync_task: asyncio.Task[None] | None = None

    async def on_policy_event(
        self, event: Mapping[str, Any], body: kopf.Body, logger: logging.Logger, **_: Any
    ) -> None:
        """Index, re-index or drop the policy; ask for its validation status to be written."""
        ref = ref_of(body)
        if event.get("type") == "DELETED":
            self._forget(ref.key, logger)
            self._handled(ref)
            return
        if body.metadata.get("deletionTimestamp"):
            self.index.remove(ref.key)  # on its way out (other finalizers): it must not remediate anything more
            self._handled(ref)
            return
        status = body.get("status") or {}
        self.recorder.seed(ref.key, status.get("counters"), status.get("lastDecision"))
        generation = int(body.metadata.get("generation") or 0)
        result = check_policy(
            ref.namespace,
            ref.name,
            generation,
            body.get("spec"),
            self.catalog,
            system_namespace=self.index.system_namespace,
        )
        self._update_index(ref.key, result, logger)
        await self._reset_circuits(ref.key, body, logger)
        self._handled(ref)  # indexed or refused: either way the index now says what it should about it
        # Our own last intent is newer than the cluster's copy until the sync has written it.
        current = self.sync.intended(ref.key) or status
        desired = validation_status(result, body.get("spec"), generation, current, self.clock())
        ready = desired["conditions"][-1]
        self.sync.observe(ref, status, desired, ready_event(ready, find_condition(current, READY)))

    async def _reset_circuits(self, key: str, body: kopf.Body, logger: logging.Logger) -> None:
        """`remediation.homelab.io/reset-circuit: <function>[@<anything>]` (comma-separated): close those circuits.

        Applied once per value (the store remembers the last one), so the annotation may stay; to reset again,
        set a new value (e.g. `pod-restart@2`). Nothing is written to the object itself.
        """
        value = (body.metadata.annotations or {}).get(RESET_CIRCUIT_ANNOTATION)
        if not value or self.reset_circuit is None:
            return
        for token in (t.strip() for t in str(value).split(",")):
            function = token.partition("@")[0]
            if not function:
                continue
            try:
                if await asyncio.to_thread(self.reset_circuit, key, function, token):
                    logger.info("circuit breaker of %s reset by annotation (%s)", function, token)
            except Exception as exc:  # noqa: BLE001 - the store unavailable: the next watch event retries it
                logger.warning("cannot reset the circuit breaker of %s: %s", function, exc)

    def _handled(self, ref: ObjectRef) -> None:
        if self.index_sync is not None:
            self.index_sync.seen(ref.key, ref.uid)

    def _forget(self, key: str, logger: logging.Logger) -> None:
        self.index.remove(key)
        self.recorder.forget(key)
        self.sync.forget(key)
        logger.info("policy %s deleted: removed from the index", key)

    def _update_index(self, key: str, result: CheckResult, logger: logging.Logger) -> None:
        if result.policy is not None:
            self.index.upsert(result.policy)  # a no-op when nothing changed
        elif self.index.get(key) is not None:
            self.index.remove(key)
            logger.warning("policy %s removed from the index: %s", key, "; ".join(map(str, result.problems)))

    async def start_status_sync(self, logger: logging.Logger, **_: Any) -> None:
        """Startup: credentials for the status writer (as kopf's login finds them), then the writer's loop."""
        if self.sync.writer is None:
            self.sync.writer = await asyncio.to_thread(KubernetesStatusWriter.from_environment)
        loop = self.sync.run() if self.status_singleton is None else self.status_singleton.run(self.sync.run)
        self._sync_task = asyncio.create_task(loop, name="policy-status-sync")
        logger.debug("policy status sync started (every %.1f s)", self.sync.interval)

    async def stop_status_sync(self, **_: Any) -> None:
        """Cleanup: one last flush (bounded), so counters recorded just before shutdown are not lost."""
        # Read before the loop stops (stopping it releases the lock); only the status writer flushes.
        holder = self.status_singleton is None or self.status_singleton.holding
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        if self.sync.writer is not None and holder:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sync.flush(), timeout=10)

    @staticmethod
    async def configure_kopf_storage(settings: kopf.OperatorSettings, **_: Any) -> None:
        """Startup: where kopf would keep handler state, should a change handler ever be added.

        Today kopf stores nothing (an event handler needs no progress or diff
        base). Were that to change, its state must go to annotations under our
        group, not to `.status`: the CRD's strict status schema would prune it
        and kopf would then re-run handlers forever.
        """
        settings.persistence.finalizer = f"{GROUP}/operator"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)

    async def probe(self, **_: Any) -> dict[str, int]:
        """Shown by the liveness endpoint."""
        return {
            "policies": len(self.index),
            "indexVersion": self.index.version,
            "statusBacklog": self.sync.backlog(),
            "statusWriteFailures": self.sync.write_failures,
        }


def build_registry(
    index: PolicyIndex,
    recorder: PolicyStatusRecorder,
    catalog: Catalog,
    *,
    status_flush_seconds: float = STATUS_FLUSH_SECONDS,
    status_writer: StatusWriter | None = None,
    index_sync: IndexSync | None = None,
    status_singleton: Singleton | None = None,
    reset_circuit: Callable[[str, str, str], bool] | None = None,
) -> kopf.OperatorRegistry:
    """A fresh kopf registry with the policy handlers (never kopf's global default registry).

    `status_writer` defaults to the Kubernetes API with the operator's own
    credentials (made at startup, not here). `index_sync`, when given, is told
    about every policy the handler is done with (readiness in the app).
    """
    registry = kopf.OperatorRegistry()
    sync = PolicyStatusSync(recorder, status_writer, interval=status_flush_seconds)
    handlers = PolicyHandlers(
        index=index,
        recorder=recorder,
        catalog=catalog,
        sync=sync,
        index_sync=index_sync,
        status_singleton=status_singleton,
        reset_circuit=reset_circuit,
    )
    # A fresh registry has none of kopf's default logins: use the kubernetes
    # client's (in-cluster service account, else KUBECONFIG / ~/.kube/config),
    # as `kopf run` would.
    kopf.on.login(registry=registry, id="login")(kopf.login_via_client)
    kopf.on.startup(registry=registry, id="kopf-storage")(handlers.configure_kopf_storage)
    kopf.on.startup(registry=registry, id="status-sync")(handlers.start_status_sync)
    kopf.on.cleanup(registry=registry, id="status-sync")(handlers.stop_status_sync)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="index")(handlers.on_policy_event)
    kopf.on.probe(registry=registry, id="index")(handlers.probe)
    return registry


class _QuietRoutineSuccess(logging.Filter):
    """Drop kopf's "Handler 'index' succeeded." line: it comes with every watch event; failures still log."""

    ROUTINE = ("Handler 'index' succeeded",)

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
    if namespaces and not any(is_namespace_pattern(ns) for ns in namespaces):
        # Exact namespace names need no namespace scanning; without this kopf would
        # retry listing namespaces (which our ClusterRole does not grant) for about a
        # minute before indexing anything. The CRD must then exist before start.
        settings.scanning.disabled = True
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
