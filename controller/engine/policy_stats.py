"""A policy's `.status` and Events: recorded in memory, written to the cluster by one task that never gives up.

The pipeline decides in its own tasks (and possibly threads) and must never
wait for the Kubernetes API; the operator owns every write to a
RemediationPolicy. Two pieces sit between them:

- `PolicyStatusRecorder`: the pipeline calls `record()` (cheap, thread-safe,
  no I/O); `snapshot()` gives `.status.counters` and `.status.lastDecision`,
  `drain_events()` the Kubernetes Events to post.
- `PolicyStatusSync`: the one writer. The operator's watch handler tells it
  what each policy's validation status should be (`observe`); a single loop
  (`run`) writes whatever differs from the last known `.status` as one JSON
  merge patch per policy, then posts the pending Events. A failed write (the
  apiserver restarting, a network cut) is simply retried on the next tick; the
  Events wait in the recorder's bounded queue meanwhile.

Why not a kopf timer per policy: a timer makes kopf put a finalizer on every
policy (deletion then hangs whenever the operator is not running), and when
the status patch a timer returns fails after kopf's retries, kopf ends that
timer for good, so the counters would silently stop moving after an apiserver
outage.

Counters survive an operator restart: on first sight of a policy the operator
`seed()`s the recorder with the counters already in its `.status`, and the
recorder adds to them. Events are bounded per policy: under an alert storm the
oldest pending events are dropped and counted, never queued without limit.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from controller.schemas.decision import Decision

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger(__name__)

GROUP = "remediation.homelab.io"
VERSION = "v1alpha1"
PLURAL = "remediationpolicies"
KIND = "RemediationPolicy"
#: Seconds for one status or Event request before it counts as failed (and is retried next tick).
REQUEST_TIMEOUT_S = 30.0

RecordKind = Literal["matched", "trigger", "escalation", "dry_run", "dead_letter", "approval_requested"]

# Record kind -> the counter it bumps in `.status.counters` (the CRD's field names).
COUNTER_OF: dict[str, str] = {
    "matched": "alertsMatched",
    "trigger": "triggers",
    "escalation": "escalations",
    "dry_run": "dryRunDecisions",
    "dead_letter": "deadLetters",
    "approval_requested": "approvalsRequested",
}
COUNTER_NAMES: tuple[str, ...] = tuple(COUNTER_OF.values())

# Record kind -> (Event type, Event reason). "matched" is only counted: an Event
# per matching alert would double every other Event for no new information.
EVENT_OF: dict[str, tuple[str, str]] = {
    "trigger": ("Normal", "Triggered"),
    "escalation": ("Warning", "Escalated"),
    "dry_run": ("Normal", "DryRun"),
    "dead_letter": ("Warning", "DeadLettered"),
    "approval_requested": ("Normal", "ApprovalRequested"),
}

#: Events kept per policy between two flushes; older ones are dropped (and counted) beyond this.
MAX_PENDING_EVENTS = 50


@dataclass(frozen=True)
class PolicyEvent:
    """One Kubernetes Event to post on a policy."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class _PolicyRecord:
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    last_decision: dict[str, Any] | None = None
    events: deque[PolicyEvent] = field(default_factory=lambda: deque(maxlen=MAX_PENDING_EVENTS))
    dropped_events: int = 0
    seeded: bool = False


def rfc3339(moment: datetime) -> str:
    """Kubernetes' timestamp format (`date-time`, UTC, second precision, `Z`)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_decision_of(decision: Decision, kind: RecordKind) -> dict[str, Any]:
    """`.status.lastDecision` for a decision; absent values are left out, as the CRD has no nulls."""
    entry: dict[str, Any] = {
        "time": rfc3339(decision.created_at),
        "alertname": decision.alertname,
        "function": decision.function,
        "stage": decision.stage,
        "confidence": decision.confidence,
        "outcome": kind,
        "decisionId": decision.id,
    }
    return {k: v for k, v in entry.items() if v is not None}


def default_message(decision: Decision, kind: RecordKind) -> str:
    """A one-line Event message: what was decided, by which stage, for which alert."""
    if decision.function:
        params = ", ".join(f"{k}={v}" for k, v in sorted(decision.parameters.items()))
        what = f"{decision.function}({params})"
        if decision.stage:
            what += f" by {decision.stage}"
        if decision.confidence is not None:
            what += f" at confidence {decision.confidence:.2f}"
    else:
        what = "no function"
    text = f"{kind.replace('_', ' ')}: alert {decision.alertname or '?'} -> {what}; decision {decision.id}"
    if decision.reasoning and kind == "escalation":
        text += f"; {decision.reasoning}"
    return text


class PolicyStatusRecorder:
    """Thread-safe, in-memory counters, last decision and pending Events per policy (`namespace/name`)."""

    def __init__(self, max_pending_events: int = MAX_PENDING_EVENTS) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, _PolicyRecord] = {}
        self._max_pending_events = max_pending_events

    def _record_for(self, policy_key: str) -> _PolicyRecord:
        record = self._records.get(policy_key)
        if record is None:
            record = _PolicyRecord(events=deque(maxlen=self._max_pending_events))
            self._records[policy_key] = record
        return record

    def record(self, policy_key: str, decision: Decision, kind: RecordKind, message: str = "") -> None:
        """Count what happened to `decision` under the policy, remember it as the last, queue its Event."""
        if kind not in COUNTER_OF:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(COUNTER_OF)}")
        event = None
        if kind in EVENT_OF:
            event_type, reason = EVENT_OF[kind]
            event = PolicyEvent(event_type, reason, message or default_message(decision, kind))  # type: ignore[arg-type]
        last = last_decision_of(decision, kind)
        with self._lock:
            record = self._record_for(policy_key)
            record.counters[COUNTER_OF[kind]] += 1
            record.last_decision = last
            if event is not None:
                if len(record.events) == record.events.maxlen:
                    record.dropped_events += 1
                record.events.append(event)

    def seed(self, policy_key: str, counters: dict[str, Any] | None, last_decision: dict[str, Any] | None) -> None:
        """Start from what `.status` already holds (once per policy), so a restart does not zero the counters.

        Whatever was recorded before the seed is added on top; a later call is ignored.
        """
        with self._lock:
            record = self._record_for(policy_key)
            if record.seeded:
                return
            record.seeded = True
            for name in COUNTER_NAMES:
                value = (counters or {}).get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    record.counters[name] += value
            if record.last_decision is None and last_decision:
                record.last_decision = dict(last_decision)

    def is_seeded(self, policy_key: str) -> bool:
        with self._lock:
            record = self._records.get(policy_key)
            return record is not None and record.seeded

    def snapshot(self, policy_key: str) -> dict[str, Any]:
        """`{"counters": {...}, "lastDecision": {...}}` as written to `.status` (no lastDecision until one exists)."""
        with self._lock:
            record = self._records.get(policy_key)
            counters = dict(record.counters) if record else dict.fromkeys(COUNTER_NAMES, 0)
            last = dict(record.last_decision) if record and record.last_decision else None
        out: dict[str, Any] = {"counters": counters}
        if last is not None:
            out["lastDecision"] = last
        return out

    def drain_events(self, policy_key: str) -> list[PolicyEvent]:
        """Take the pending Events (oldest first); a summary Event says how many were dropped, if any."""
        with self._lock:
            record = self._records.get(policy_key)
            if record is None or (not record.events and not record.dropped_events):
                return []
            events = list(record.events)
            dropped, record.dropped_events = record.dropped_events, 0
            record.events.clear()
        if dropped:
            summary = f"{dropped} older decision events were not posted (storm)"
            events.insert(0, PolicyEvent("Warning", "EventsDropped", summary))
        return events

    def forget(self, policy_key: str) -> None:
        """Drop everything about a deleted policy, so one re-created under the same name starts from zero."""
        with self._lock:
            self._records.pop(policy_key, None)


# --------------------------------------------------------------------------
# Writing: the merge patch that brings .status up to date, and the one writer
# --------------------------------------------------------------------------


def merge_patch_for(current: Any, desired: Any) -> Any:
    """The JSON merge patch that turns `current` into `desired` (None removes a key), or ``...`` when equal.

    Objects are patched key by key, so a key that disappeared (the `function`
    of a last decision that escalated) is removed rather than left behind.
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
    """Top-level status fields to patch so that `desired` holds; fields not named in `desired` are left alone."""
    changes = {}
    for key, value in desired.items():
        if value is None and key not in current:
            continue
        patch = merge_patch_for(current.get(key), value)
        if patch is not ...:
            changes[key] = patch
    return changes


def apply_merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 on plain dicts: what the apiserver will hold after `patch` (to avoid re-sending it)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = apply_merge_patch(out[key], value)
        elif isinstance(value, Mapping):
            out[key] = apply_merge_patch({}, value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class ObjectRef:
    """Enough of a policy to patch its status and to hang Events on it."""

    namespace: str
    name: str
    uid: str = ""
    api_version: str = f"{GROUP}/{VERSION}"
    kind: str = KIND

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class StatusWriter(Protocol):
    """The two API calls the sync makes; a fake in unit tests, `KubernetesStatusWriter` in a cluster."""

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> None: ...

    async def post_event(self, ref: ObjectRef, event: PolicyEvent) -> None: ...


class ObjectGone(Exception):
    """The policy no longer exists (404): stop writing to it."""


class WriteRefused(Exception):
    """The apiserver refused this one write (a 4xx other than 404, 408, 429): the API itself is fine."""


class KubernetesStatusWriter:
    """`StatusWriter` on the official client (its blocking calls run in a worker thread).

    Credentials come from the same places as kopf's login: the in-cluster
    service account, else KUBECONFIG / ~/.kube/config. The service-account
    token is re-read by the client when the kubelet rotates it.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, *, component: str = "trm-sre") -> None:
        import kubernetes.client

        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._component = component
        self._instance = socket.gethostname()

    @classmethod
    def from_environment(cls) -> KubernetesStatusWriter:
        import kubernetes.client
        import kubernetes.config

        configuration = kubernetes.client.Configuration()
        # One quick retry covers a keep-alive connection the apiserver closed; anything
        # longer is the sync loop's job (it retries every tick without blocking a thread).
        configuration.retries = 1
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        return cls(kubernetes.client.ApiClient(configuration))

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            await asyncio.to_thread(
                self._custom.patch_namespaced_custom_object_status,
                GROUP, VERSION, ref.namespace, PLURAL, ref.name, {"status": patch},
                # Strict: a status field the CRD does not know is an error to see, not data to drop silently.
                field_validation="Strict",
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ObjectGone(ref.key) from exc
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                raise WriteRefused(f"{exc.status} {exc.reason}: {str(exc.body)[:500]}") from exc
            raise

    async def post_event(self, ref: ObjectRef, event: PolicyEvent) -> None:
        import kubernetes.client

        now = rfc3339(datetime.now(UTC))
        body = kubernetes.client.CoreV1Event.from_dict({
            "metadata": {"generateName": f"{ref.name[:200]}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name,
                "namespace": ref.namespace, "uid": ref.uid or None,
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "action": "Remediate",
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        })
        await asyncio.to_thread(self._core.create_namespaced_event, ref.namespace, body, _request_timeout=REQUEST_TIMEOUT_S)


@dataclass
class _Tracked:
    ref: ObjectRef
    observed: dict[str, Any]  # .status as last seen in a watch event, or as we last wrote it
    validation: dict[str, Any]  # the status fields the watch handler owns
    events: list[PolicyEvent] = field(default_factory=list)  # e.g. a Ready change, posted after the status
    failing: bool = False


class PolicyStatusSync:
    """The single writer of policies' `.status` and Events (see the module docstring).

    `observe` and `forget` are called from the operator's watch handler,
    `run` is one task in the same event loop; nothing here blocks that loop.
    """

    def __init__(self, recorder: PolicyStatusRecorder, writer: StatusWriter | None = None, interval: float = 5.0) -> None:
        self.recorder = recorder
        self.writer = writer
        self.interval = interval
        self._tracked: dict[str, _Tracked] = {}
        self._wake = asyncio.Event()
        self.write_failures = 0

    def observe(
        self, ref: ObjectRef, status: Mapping[str, Any], validation: dict[str, Any], event: PolicyEvent | None = None
    ) -> None:
        """A watch event showed `status`; the watch handler wants `validation` to hold (and `event` posted)."""
        tracked = self._tracked.get(ref.key)
        if tracked is None or tracked.ref.uid != ref.uid:
            tracked = self._tracked[ref.key] = _Tracked(ref, dict(status), validation)
        else:
            tracked.observed, tracked.validation = dict(status), validation
        if event is not None:
            tracked.events.append(event)
        if status_changes(tracked.observed, validation) or event is not None:
            self._wake.set()  # write now rather than at the next tick

    def intended(self, key: str) -> dict[str, Any] | None:
        """The validation status last asked for (newer than the cluster's copy until it is written)."""
        tracked = self._tracked.get(key)
        return tracked.validation if tracked else None

    def forget(self, key: str) -> None:
        self._tracked.pop(key, None)

    def backlog(self) -> int:
        """Policies whose status or Events are not written yet."""
        return sum(1 for key, t in self._tracked.items() if t.events or self._changes(key, t))

    def _changes(self, key: str, tracked: _Tracked) -> dict[str, Any]:
        return status_changes(tracked.observed, {**tracked.validation, **self.recorder.snapshot(key)})

    async def flush(self) -> None:
        """Write every policy whose status differs from what it should be; post pending Events.

        A failure that looks like the API itself (connection, timeout, 5xx) ends
        the round: with the apiserver down, trying the other policies would only
        wait out one timeout each. The next tick starts over.
        """
        for key in list(self._tracked):
            tracked = self._tracked.get(key)
            if tracked is not None and not await self._flush_one(key, tracked):
                return

    async def _flush_one(self, key: str, tracked: _Tracked) -> bool:
        """Write one policy; False when the API looks unavailable."""
        assert self.writer is not None, "PolicyStatusSync.flush needs a writer"
        changes = self._changes(key, tracked)
        try:
            if changes:
                await self.writer.patch_status(tracked.ref, changes)
                tracked.observed = apply_merge_patch(tracked.observed, changes)
        except ObjectGone:
            self.forget(key)
            return True
        except WriteRefused as exc:
            self._failed(key, tracked, exc)
            return True
        except Exception as exc:  # noqa: BLE001 - any other failure is retried next tick; the loop must outlive it
            self._failed(key, tracked, exc)
            return False
        if tracked.failing:
            log.info("status of policy %s written again", key)
            tracked.failing = False
        events, tracked.events = tracked.events + self.recorder.drain_events(key), []
        for event in events:
            try:
                await self.writer.post_event(tracked.ref, event)
            except Exception as exc:  # noqa: BLE001 - an Event is best effort (as kopf's are): log, never block status
                log.warning("cannot post event %s on policy %s: %s", event.reason, key, exc)
        return True

    def _failed(self, key: str, tracked: _Tracked, exc: Exception) -> None:
        self.write_failures += 1
        if not tracked.failing:  # once per streak, not every tick
            log.warning("cannot write the status of policy %s (will retry): %s", key, exc)
        tracked.failing = True

    async def run(self) -> None:
        """Flush every `interval` seconds, or as soon as the watch handler asks; until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
