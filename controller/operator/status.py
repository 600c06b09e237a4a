"""Writes what `PolicyStatusRecorder` recorded to the cluster: one task that never gives up.

`PolicyStatusSync` is the one writer. The operator's watch handler tells it
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
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from controller.engine.policy_stats import PolicyEvent, PolicyStatusRecorder, rfc3339
from controller.schemas.crd import GROUP, KIND, PLURAL, VERSION

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger(__name__)

#: Seconds for one status or Event request before it counts as failed (and is retried next tick).
REQUEST_TIMEOUT_S = 30.0


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
                GROUP,
                VERSION,
                ref.namespace,
                PLURAL,
                ref.name,
                {"status": patch},
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
        body = kubernetes.client.CoreV1Event.from_dict(
            {
                "metadata": {"generateName": f"{ref.name[:200]}.", "namespace": ref.namespace},
                "involvedObject": {
                    "apiVersion": ref.api_version,
                    "kind": ref.kind,
                    "name": ref.name,
                    "namespace": ref.namespace,
                    "uid": ref.uid or None,
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
            }
        )
        await asyncio.to_thread(
            self._core.create_namespaced_event, ref.namespace, body, _request_timeout=REQUEST_TIMEOUT_S
        )


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

    def __init__(
        self, recorder: PolicyStatusRecorder, writer: StatusWriter | None = None, interval: float = 5.0
    ) -> None:
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
        desired = {**tracked.validation, **self.recorder.snapshot(key)}
        engine_conditions = self.recorder.conditions(key)  # FunctionPaused (controller.engine.outcomes)
        if engine_conditions and isinstance(desired.get("conditions"), list):
            types = {c["type"] for c in engine_conditions}
            kept = [c for c in desired["conditions"] if not (isinstance(c, Mapping) and c.get("type") in types)]
            desired["conditions"] = [*kept, *engine_conditions]
        return status_changes(tracked.observed, desired)

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
