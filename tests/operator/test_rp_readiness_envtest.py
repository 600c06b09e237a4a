"""Cluster-mode readiness against a real apiserver: `/readyz` waits until the policy index is complete.

The whole controller (HTTP API, pipeline and kopf operator in one event loop)
runs in a thread of the test process, in cluster mode, watching this test's
namespace with the admin credentials of the test control plane (the RBAC of
that LIST is covered by tests/hardening/test_hardening_rbac_audit.py). The
policies exist before it starts, as after a pod restart.

To make "the operator has not got to it yet" observable, a test wraps the
operator's handler (`PolicyHandlers.on_policy_event`) so that one policy is
handled late, or never: a big cluster or a busy node does the same. Before
the fix readiness only meant "kopf has started", so `/readyz` said 200 while
that policy was not in the index, and an alert for it was recorded as
unmatched.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from controller import app
from controller.app import Components
from controller.operator.handlers import PolicyHandlers
from controller.operator.readiness import KubernetesPolicyLister, PolicyListError
from controller.schemas.alerts import label_fingerprint
from tests.e2e.harness import http
from tests.envtest.controlplane import ControlPlane
from tests.operator.support import Kube, policy_manifest, wait_for
from tests.support.controllers import controller_in_thread, server_settings

pytestmark = pytest.mark.envtest

TOKEN = "readyz-" + secrets.token_hex(8)
STARTS_AT = "2026-05-01T10:04:30Z"


def rules_spec(pod: str, **overrides: Any) -> dict[str, Any]:
    """A rules-only policy for crash loops of one pod (no model needed): each policy decides its own alert."""
    spec: dict[str, Any] = {
        "match": {"alertNames": ["KubePodCrashLooping"], "matchers": [{"label": "pod", "op": "=", "value": pod}]},
        "targetNamespaces": ["shop"],
        "allowedFunctions": ["pod-restart"],
        "chain": [
            {
                "rules": [
                    {
                        "function": "pod-restart",
                        "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
                    }
                ]
            }
        ],
    }
    spec.update(overrides)
    return spec


def apply_all(kube: Kube, manifests: list[str]) -> None:
    kube.apply("---\n".join(manifests))


def alert_payload(pod: str, fingerprint: str) -> dict[str, Any]:
    labels = {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": pod, "severity": "warning"}
    return {
        "version": "4",
        "status": "firing",
        "receiver": "trm-sre",
        "groupKey": "{}:{}",
        "groupLabels": {},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {},
                "startsAt": STARTS_AT,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
            }
        ],
    }


def slow_handler(monkeypatch: pytest.MonkeyPatch, delay: Callable[[str, Any], float | None]) -> None:
    """Wrap the operator's event handler: `delay(name, event type)` seconds first; None drops the event."""
    original = PolicyHandlers.on_policy_event

    async def wrapped(self: PolicyHandlers, event: Any, body: Any, logger: Any, **kwargs: Any) -> None:
        seconds = delay(body.metadata.name, event.get("type"))
        if seconds is None:
            return
        if seconds:
            await asyncio.sleep(seconds)
        await original(self, event=event, body=body, logger=logger, **kwargs)

    monkeypatch.setattr(PolicyHandlers, "on_policy_event", wrapped)


@contextmanager
def cluster_controller(namespace: str, tmp_path: Path) -> Iterator[tuple[str, Components]]:
    """The controller in cluster mode, watching `namespace`, no model; (its URL, its components)."""
    # Its policies target shop: only the system namespace's may (issue #13.10).
    settings = server_settings(
        tmp_path / "state", token=TOKEN, standalone=False, namespaces=(namespace,), system_namespace=namespace
    )
    with controller_in_thread(settings, attempts=3000, join_timeout=60) as (url, thread, holder):
        yield url, holder["controller"].c
        holder["controller"].request_stop()
    assert not thread.is_alive(), "the controller did not stop"
    assert holder.get("exit") == 0


def first_ready(url: str, components: Components, timeout: float = 90) -> tuple[set[str], list[list[str]]]:
    """Poll /readyz until the first 200: (the index's keys right then, every 503 body's reasons before it)."""
    deadline = time.monotonic() + timeout
    not_ready: list[list[str]] = []
    while time.monotonic() < deadline:
        status, body = http("GET", f"{url}/readyz")
        if status == 200:
            return {p.key for p in components.index.all()}, not_ready
        assert status == 503, (status, body)
        not_ready.append(body["reasons"])
        time.sleep(0.02)
    raise AssertionError(f"not ready after {timeout:.0f} s; last reasons: {not_ready[-1:]}")


def decided_by(components: Components, incident_key: str) -> str | None:
    """The policy that decided the incident, "unmatched", or None while it waits for a decision."""
    with components.store.reading() as tx:
        incident = tx.incident(incident_key)
        if incident is None or incident.state == "open":
            return None
        if incident.state == "unmatched":
            return "unmatched"
        decision_id = tx.decision_id_for_incident(incident_key)
        decision = tx.decision(decision_id) if decision_id else None
        return decision.decision.policy if decision is not None else None


def test_ready_only_once_every_policy_listed_at_start_is_indexed(
    kube: Kube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 30
    names = [f"p-{n:02d}" for n in range(count)]
    invalid = {names[n] for n in (3, 11, 19, 26)}
    manifests = [
        policy_manifest(name, rules_spec(f"pod-{name}", allowedFunctions=["pod-restart", "pod-delete"]))
        if name in invalid
        else policy_manifest(name, rules_spec(f"pod-{name}"))
        for name in names
    ]
    apply_all(kube, manifests)
    last = names[-1]
    # The last-created policy is handled 2 s late, every other one at once.
    slow_handler(monkeypatch, lambda name, _type: 2.0 if name == last else 0)
    valid = {f"{kube.namespace}/{name}" for name in names if name not in invalid}

    with cluster_controller(kube.namespace, tmp_path) as (url, components):
        indexed, not_ready = first_ready(url, components)
        assert indexed == valid, (
            f"ready with {len(valid - indexed)} valid policies not indexed: {sorted(valid - indexed)}"
        )
        # The reason said what it waited for.
        assert any(f"{kube.namespace}/{last}" in " ".join(reasons) for reasons in not_ready), not_ready[-3:]
        # An alert for the last-created policy, sent the moment the controller is ready, is decided by it.
        # The incident's fingerprint is the labels' (issue #13.9): a sender's own must be Alertmanager's 16 hex digits.
        payload = alert_payload(f"pod-{last}", "")
        fingerprint = label_fingerprint(payload["alerts"][0]["labels"])
        status, body = http("POST", f"{url}/alertmanager", payload, token=TOKEN)
        assert (status, body["new_incidents"]) == (200, 1), body
        policy = wait_for("the decision", lambda: decided_by(components, f"{fingerprint}@{STARTS_AT[:-1]}.000000Z"))
        assert policy == f"{kube.namespace}/{last}"
        # The invalid ones were seen (and refused), not waited for: Ready=False on each.
        for name in invalid:
            wait_for(f"{name} Ready=False", lambda name=name: (c := kube.ready(name)) and c["status"] == "False")


def test_ready_with_no_policy_at_all(kube: Kube, tmp_path: Path) -> None:
    with cluster_controller(kube.namespace, tmp_path) as (url, components):
        indexed, _ = first_ready(url, components)
        assert indexed == set()
        # Policies created later are indexed as usual; readiness is not lost meanwhile.
        kube.apply(policy_manifest("later", rules_spec("pod-later")))
        wait_for("the later policy indexed", lambda: components.index.get(f"{kube.namespace}/later"))
        assert http("GET", f"{url}/readyz")[0] == 200


@pytest.mark.parametrize("deleted_event", ["handled", "lost"])
def test_a_policy_deleted_during_startup_does_not_block_readiness(
    kube: Kube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deleted_event: str
) -> None:
    apply_all(kube, [policy_manifest(name, rules_spec(f"pod-{name}")) for name in ("kept", "doomed")])

    def delay(name: str, event_type: Any) -> float | None:
        if name != "doomed":
            return 0
        # The operator never gets to "doomed" before it is deleted; with "lost" not even its DELETED
        # event arrives (deleted before kopf's own listing): only a re-list can tell it is gone.
        return 0 if event_type == "DELETED" and deleted_event == "handled" else None

    slow_handler(monkeypatch, delay)
    with cluster_controller(kube.namespace, tmp_path) as (url, components):
        doomed = f"{kube.namespace}/doomed"

        def waiting_for_doomed() -> list[str] | None:
            status, body = http("GET", f"{url}/readyz")
            assert status == 503, f"ready while {doomed} was never handled: {body}"
            return body["reasons"] if components.index.get(f"{kube.namespace}/kept") and doomed in str(body) else None

        reasons = wait_for("/readyz waiting for the unhandled policy", waiting_for_doomed)
        assert any("RemediationPolic" in r and doomed in r for r in reasons), reasons
        kube.delete_policy("doomed", wait=True)
        indexed, _ = first_ready(url, components, timeout=60)
        assert indexed == {f"{kube.namespace}/kept"}


def listed_by_kubectl(kube: Kube) -> set[tuple[str, str]]:
    items = json.loads(kube.run("get", "remediationpolicies", "-n", kube.namespace, "-o", "json").stdout)["items"]
    return {(f"{i['metadata']['namespace']}/{i['metadata']['name']}", i["metadata"]["uid"]) for i in items}


def test_the_lister_sees_what_the_operator_watches(control_plane: ControlPlane, kube: Kube, tmp_path: Path) -> None:
    apply_all(kube, [policy_manifest(f"l-{n}", rules_spec(f"pod-l-{n}")) for n in range(7)])
    expected = listed_by_kubectl(kube)
    assert len(expected) == 7
    admin = str(control_plane.kubeconfig)
    # Exact namespace names, in pages of 2 (the continue token is followed).
    assert KubernetesPolicyLister([kube.namespace], page_size=2, kubeconfig=admin)() == expected
    # A kopf pattern lists cluster-wide and keeps the namespaces kopf would watch (kopf's own matcher).
    assert KubernetesPolicyLister([f"{kube.namespace[:-1]}*"], kubeconfig=admin)() == expected
    assert KubernetesPolicyLister([f"{kube.namespace[:-1]}*, !{kube.namespace}"], kubeconfig=admin)() == set()
    # Cluster-wide: these and whatever other tests left.
    assert expected <= KubernetesPolicyLister([], page_size=3, kubeconfig=admin)()
    # Refused credentials are an error naming the status, never an empty list.
    stranger = control_plane.write_kubeconfig(tmp_path / "stranger", token="not-a-known-token")
    with pytest.raises(PolicyListError, match="401 Unauthorized"):
        KubernetesPolicyLister([kube.namespace], kubeconfig=str(stranger))()


def test_never_ready_while_the_policies_cannot_be_listed(
    control_plane: ControlPlane, kube: Kube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.apply(policy_manifest("indexed", rules_spec("pod-indexed")))
    # The operator (kopf) works; only the readiness LIST is refused (its own credentials are wrong).
    stranger = control_plane.write_kubeconfig(tmp_path / "stranger", token="not-a-known-token")
    monkeypatch.setattr(
        app, "KubernetesPolicyLister", functools.partial(KubernetesPolicyLister, kubeconfig=str(stranger))
    )
    with cluster_controller(kube.namespace, tmp_path) as (url, components):
        wait_for("the policy indexed", lambda: components.index.get(f"{kube.namespace}/indexed"))

        def refused() -> list[str] | None:
            status, body = http("GET", f"{url}/readyz")
            assert status == 503, body
            return body["reasons"] if "401" in str(body) else None

        (reason,) = wait_for("the refused list in /readyz", refused)
        assert reason.startswith("cannot list RemediationPolicies") and "401 Unauthorized" in reason
        time.sleep(components.readiness.index_sync.relist_s * 2)  # type: ignore[union-attr]  # re-lists fail alike
        assert http("GET", f"{url}/readyz")[0] == 503
