"""Alerts, policies and a running engine for the engine tests; no model, no cluster.

Policies use rules-only or static-annotation chains, so every decision here is
deterministic. The engine runs with fast backoffs so retry paths finish in
milliseconds; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.decision.chain import StageClients
from controller.decision.policy_index import PolicyIndex
from controller.engine.config import EngineSettings
from controller.engine.delivery import trigger_entry
from controller.engine.pipeline import IngestResult, Pipeline
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.store import DB_FILENAME, OutboxEntry, Store
from controller.observability.metrics import Metrics
from controller.schemas.alerts import AlertEvent, AlertmanagerPayload, split_payload
from controller.schemas.decision import Decision, decision_id
from controller.schemas.policy import Policy, PolicySpec
from runbooks import default_catalog

CRASHLOOP = "KubePodCrashLooping"
STARTS = "2026-05-01T10:00:00Z"

RESTART_RULES: list[dict[str, Any]] = [
    {
        "rules": [
            {
                "function": "pod-restart",
                "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}", "type": "pod"},
            }
        ]
    }
]

FAST = EngineSettings(
    sink=None,
    workers=2,
    delivery_attempts=3,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    redeliver_interval_s=0.1,
    sink_timeout_s=2.0,
    approval_check_interval_s=0.05,
)


def alert_dict(
    pod: str = "cart-1",
    *,
    status: str = "firing",
    starts_at: str = STARTS,
    alertname: str = CRASHLOOP,
    namespace: str = "shop",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alertname, "namespace": namespace, "pod": pod, "severity": "warning"},
        "annotations": annotations or {},
        "startsAt": starts_at,
        "endsAt": "2026-05-01T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
    }


def payload(*alerts: dict[str, Any]) -> list[AlertEvent]:
    """An Alertmanager webhook body split into events, as the edge hands them over."""
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="KubePodCrashLooping"}',
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "trm-sre",
        "groupLabels": {"alertname": CRASHLOOP},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }
    return split_payload(AlertmanagerPayload.model_validate(body))


def policy(
    name: str = "restart",
    namespace: str = "shop",
    *,
    actions: dict[str, Any] | None = None,
    chain: list[dict[str, Any]] | None = None,
    alert_names: tuple[str, ...] = (CRASHLOOP,),
) -> Policy:
    spec = PolicySpec.model_validate(
        {
            "match": {"alertNames": list(alert_names)},
            "allowedFunctions": ["pod-restart", "pod-check-status"],
            "chain": chain if chain is not None else RESTART_RULES,
            "actions": actions or {},
        }
    )
    return Policy(namespace=namespace, name=name, generation=1, spec=spec)


def sample_decision(function: str = "pod-restart", parameters: dict[str, Any] | None = None, n: int = 1) -> Decision:
    """A rules-stage trigger decision for incident `fp<n>`, as the engine would commit it."""
    return Decision(
        id=f"dec{n}",
        incident_key=f"fp{n}@2026-05-01T10:00:00.000000Z",
        fingerprint=f"fp{n}",
        alertname="KubePodCrashLooping",
        policy="shop/crashloops",
        outcome="trigger",
        stage="rules",
        function=function,
        parameters=parameters or {"name": "cart-1", "namespace": "shop", "type": "pod"},
    )


def sample_trigger(function: str = "pod-restart", parameters: dict[str, Any] | None = None, n: int = 1) -> OutboxEntry:
    """The outbox entry of `sample_decision` (what the sink client sends)."""
    return trigger_entry(sample_decision(function, parameters, n), payload(alert_dict())[0], "/trm-sre", None)


def trigger_id(event: AlertEvent, policy_key: str = "shop/restart") -> str:
    return f"{decision_id(event.incident_key, policy_key)}-trigger"


class FakeClock:
    """Wall-clock seconds that only move when told to (cooldowns, windows, expiry, max age)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Engine:
    pipeline: Pipeline
    store: Store
    index: PolicyIndex
    recorder: PolicyStatusRecorder
    metrics: Metrics
    state_dir: Path

    async def ingest(self, events: list[AlertEvent]) -> IngestResult:
        return await self.pipeline.ingest(events)

    async def settle(self, timeout_s: float = 20.0) -> None:
        assert await self.pipeline.wait_idle(timeout_s), "the engine did not become idle"

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def counters(self, policy_key: str = "shop/restart") -> dict[str, int]:
        return self.recorder.snapshot(policy_key)["counters"]

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the database through a second connection, as an operator with sqlite3 would."""
        conn = sqlite3.connect(self.state_dir / DB_FILENAME)
        try:
            return conn.execute(query, args).fetchall()
        finally:
            conn.close()


def build_engine(
    state_dir: Path,
    policies: list[Policy],
    *,
    sink: str | None,
    clock: Any = None,
    store: Store | None = None,
    index_complete: Any = None,
    **settings: Any,
) -> Engine:
    """An engine on `state_dir` (not started): a real Store, index, recorder and metrics."""
    store = store or Store.open(state_dir)
    index = PolicyIndex()
    for p in policies:
        index.upsert(p)
    recorder = PolicyStatusRecorder()
    metrics = Metrics()
    pipeline_settings = EngineSettings.model_validate({**FAST.model_dump(), "sink": sink, **settings})
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    if index_complete is not None:
        kwargs["index_complete"] = index_complete
    pipeline = Pipeline(pipeline_settings, store, index, default_catalog(), StageClients(), recorder, metrics, **kwargs)
    return Engine(pipeline, store, index, recorder, metrics, state_dir)


class Engines:
    """Engines built for one test, stopped and closed (newest first) by `close()`: the `make_engine` fixtures."""

    def __init__(self) -> None:
        self.built: list[Engine] = []

    async def make(self, state_dir: Path, policies: list[Policy], *, start: bool = True, **kwargs: Any) -> Engine:
        """`build_engine(state_dir, policies, **kwargs)`, kept for `close()`, and started unless `start=False`."""
        engine = build_engine(state_dir, policies, **kwargs)
        self.built.append(engine)
        if start:
            await engine.pipeline.start()
        return engine

    async def close(self) -> None:
        for engine in reversed(self.built):
            await engine.pipeline.stop(drain_timeout_s=0)
            engine.store.close()


async def eventually(predicate: Any, timeout_s: float = 20.0) -> bool:
    """Poll `predicate` until it holds (background loops run meanwhile); never a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return bool(predicate())
