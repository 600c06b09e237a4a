"""The in-memory index of RemediationPolicies: written by the operator, read by the decision path.

The kopf handlers call `upsert` / `remove` as policies are created, changed and
deleted (from kopf's threads or its event loop); the pipeline calls `matching`
for every alert. Writers take a lock and only mark the index stale; the first
reader after a change rebuilds an immutable snapshot (precedence order plus a
by-alertname bucket map) under the same lock, and every later reader uses that
snapshot without locking. A burst of a thousand upserts at start-up therefore
costs one rebuild, not a thousand.

Precedence (`matching` returns policies best first; the decision path uses the first):

1. the highest ``spec.priority`` wins (range -1000..1000, default 0);
2. on equal priority, the most specific match wins: the number of criteria set in
   ``spec.match`` (each alert name, the alert-name regex, each label matcher and
   each severity count one);
3. on equal specificity, ``namespace/name`` in ascending (code-point) order, so the
   choice is deterministic and never depends on the order policies were seen.

Tenancy (issue #13.10; `policy_checks.scope_problems` refuses such policies
up front, this is the defence in depth): with a `system_namespace`, a policy
in any other namespace is confined when indexed. It matches only alerts whose
`namespace` label is its own namespace, its target scope is its own namespace
whatever `targetNamespaces` says, and its sink is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from controller.decision.matching import CompiledMatch
from controller.schemas.alerts import AlertEvent
from controller.schemas.policy import Policy


def precedence_key(policy: Policy) -> tuple[int, int, str]:
    """Sort key implementing the precedence above: smaller sorts first (better)."""
    return (-policy.spec.priority, -policy.spec.match.specificity, policy.key)


@dataclass(frozen=True, slots=True)
class _Entry:
    rank: int  # position in precedence order, for merging buckets cheaply
    policy: Policy
    match: CompiledMatch


@dataclass(frozen=True, slots=True)
class _Snapshot:
    version: int
    ordered: tuple[_Entry, ...]
    # Policies that list alertNames can only match those names: indexed by name.
    by_alertname: Mapping[str, tuple[_Entry, ...]]
    # Every other policy must be evaluated for every alert.
    unnamed: tuple[_Entry, ...]


def _build_snapshot(version: int, policies: Mapping[str, Policy], compiled: Mapping[str, CompiledMatch]) -> _Snapshot:
    ordered = tuple(
        _Entry(rank, policy, compiled[policy.key])
        for rank, policy in enumerate(sorted(policies.values(), key=precedence_key))
    )
    buckets: dict[str, list[_Entry]] = {}
    unnamed: list[_Entry] = []
    for entry in ordered:
        if entry.match.alert_names:
            for name in entry.match.alert_names:
                buckets.setdefault(name, []).append(entry)
        else:
            unnamed.append(entry)
    return _Snapshot(version, ordered, {k: tuple(v) for k, v in buckets.items()}, tuple(unnamed))


class PolicyIndex:
    """Thread-safe set of policies keyed by ``namespace/name``; see the module docstring for precedence."""

    def __init__(self, system_namespace: str | None = None) -> None:
        self.system_namespace = system_namespace
        self._lock = threading.Lock()
        self._policies: dict[str, Policy] = {}
        self._compiled: dict[str, CompiledMatch] = {}
        self._version = 0
        self._snapshot = _Snapshot(0, (), {}, ())

    @property
    def version(self) -> int:
        """Bumps on every change, so readers (status, metrics) can tell the index moved."""
        return self._version

    def upsert(self, policy: Policy) -> None:
        """Add or replace a policy; replacing it with an identical one is not a change."""
        policy = self.confined(policy)
        compiled = CompiledMatch.of(policy.spec.match)  # outside the lock: compiling regexes may take a while
        with self._lock:
            if self._policies.get(policy.key) == policy:
                return
            self._policies[policy.key] = policy
            self._compiled[policy.key] = compiled
            self._version += 1

    def is_tenant(self, policy: Policy) -> bool:
        """A policy outside the system namespace (confined to its own namespace)."""
        return self.system_namespace is not None and policy.namespace != self.system_namespace

    def confined(self, policy: Policy) -> Policy:
        """The policy as it may act: a tenant's scope is its own namespace, and it has no sink."""
        if not self.is_tenant(policy):
            return policy
        spec = policy.spec
        if spec.target_namespaces in ((), (policy.namespace,)) and spec.actions.sink is None:
            return policy
        actions = spec.actions.model_copy(update={"sink": None})
        spec = spec.model_copy(update={"target_namespaces": (policy.namespace,), "actions": actions})
        return policy.model_copy(update={"spec": spec})

    def remove(self, key: str) -> None:
        """Forget the policy ``namespace/name``; unknown keys are ignored (deletes may repeat)."""
        with self._lock:
            if self._policies.pop(key, None) is None:
                return
            del self._compiled[key]
            self._version += 1

    def get(self, key: str) -> Policy | None:
        with self._lock:
            return self._policies.get(key)

    def all(self) -> list[Policy]:
        """Every policy, in precedence order."""
        return [entry.policy for entry in self._current().ordered]

    def __len__(self) -> int:
        with self._lock:
            return len(self._policies)

    def matching(self, event: AlertEvent) -> list[Policy]:
        """The policies whose `spec.match` covers the alert, best first (see the precedence rule)."""
        labels = event.alert.labels
        snapshot = self._current()
        named = [e for e in snapshot.by_alertname.get(labels.get("alertname", ""), ()) if e.match.matches(labels)]
        unnamed = [e for e in snapshot.unnamed if e.match.matches(labels)]
        # Both lists are already in precedence order; only a mix of the two needs merging.
        hits = sorted(named + unnamed, key=lambda e: e.rank) if named and unnamed else named or unnamed
        if self.system_namespace is not None:
            # A tenant's policy acts only on alerts from its own namespace.
            own = labels.get("namespace")
            hits = [e for e in hits if e.policy.namespace == self.system_namespace or e.policy.namespace == own]
        return [entry.policy for entry in hits]

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot.version == self._version:
            return snapshot
        with self._lock:
            if self._snapshot.version != self._version:
                self._snapshot = _build_snapshot(self._version, self._policies, self._compiled)
            return self._snapshot
