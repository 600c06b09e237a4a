"""N active replicas on one PostgreSQL database: three `trm-sre run --standalone --store postgresql://…` processes.

Every replica serves webhooks. Whatever replicas receive an alert and its re-sends, each
incident gets one decision and one set of events (one trigger, under one CloudEvent id); a
replica SIGKILLed mid-burst with the sink down loses nothing (another claims its work once
its lease runs out); a cooldown holds across replicas. Real processes, a real PostgreSQL
server (tests/support/postgres.py), a real HTTP sink; no timing assertions.
"""

from __future__ import annotations

import copy
import itertools
import signal
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from controller.schemas.decision import LAMBDA_TRIGGER
from tests.e2e.harness import (
    LARGE_BUDGET_POLICY,
    ControllerProcess,
    child_env,
    crashloop_payload,
    http,
    metric_value,
    wait_until,
)
from tests.pipeline.sink import CaptureSink

pytestmark = pytest.mark.slow

REPLICAS = 3
# Fast replays for every test; short leases (the default is a minute) only where a replica is killed, so its
# work moves within seconds: elsewhere a short lease could run out on a busy replica's immediate delivery,
# and another replica would send the same event (same id) again.
FAST_REPLAY = {"TRM_SRE_ENGINE__REDELIVER_INTERVAL_S": "0.5", "TRM_SRE_ENGINE__CLAIM_INTERVAL_S": "0.5"}
FAST_CLAIMS = {
    "TRM_SRE_ENGINE__CLAIM_LEASE_S": "4",
    "TRM_SRE_ENGINE__CLAIM_INTERVAL_S": "0.5",
    "TRM_SRE_ENGINE__REDELIVER_INTERVAL_S": "0.5",
    "TRM_SRE_ENGINE__DELIVERY_ATTEMPTS": "2",
    "TRM_SRE_ENGINE__BACKOFF_MAX_S": "0.2",
}


def start_replicas(
    tmp_path: Path, sink: CaptureSink, url: str, count: int = REPLICAS, env: dict[str, str] | None = None
) -> list[ControllerProcess]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(LARGE_BUDGET_POLICY)
    replicas = []
    for i in range(count):
        args = [
            "--standalone",
            "--port",
            "0",
            "--no-model",
            "--state-dir",
            str(tmp_path / f"state-{i}"),
            "--policies",
            str(policy),
            "--store",
            url,
        ]
        replicas.append(
            ControllerProcess(args, child_env(K_SINK=sink.url, **(env or FAST_REPLAY)), tmp_path / f"r{i}.log")
        )
    # One after the other, from this thread: the harness ties each child's life to the thread that started it
    # (parent-death signal). Replicas migrating the schema at once: tests/pipeline/store/test_postgres_replicas.py.
    for replica in replicas:
        replica.start()
    return replicas


@pytest.fixture
def replicas(tmp_path: Path, sink: CaptureSink, postgres_url: str) -> Iterator[list[ControllerProcess]]:
    procs = start_replicas(tmp_path, sink, postgres_url)
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture
def sink() -> Iterator[CaptureSink]:
    with CaptureSink() as capture:
        yield capture


def triggers_by_pod(sink: CaptureSink) -> dict[str, Counter[str]]:
    """For each pod, how many times the sink accepted each trigger id for it."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for request in sink.accepted_of(LAMBDA_TRIGGER):
        seen[request.data()["parameters"]["name"]][request.ce_id or ""] += 1
    return seen


def batch(pods: list[str]) -> dict[str, Any]:
    """One webhook carrying one crash-looping alert per pod."""
    body = crashloop_payload(pods[0])
    template = body["alerts"][0]
    body["alerts"] = []
    for pod in pods:
        alert = copy.deepcopy(template)
        alert["labels"]["pod"] = pod
        body["alerts"].append(alert)
    body["commonLabels"].pop("pod", None)
    return body


def outbox_empty(url: str) -> bool:
    """Nothing pending in the shared outbox (read from the database: each replica's gauge is its last look)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM outbox WHERE state <> 'delivered'").fetchone()
    return row is not None and row[0] == 0


def test_the_same_webhook_posted_to_all_three_at_once_gives_one_trigger(
    replicas: list[ControllerProcess], sink: CaptureSink, postgres_url: str
) -> None:
    pods = [f"same-{i}" for i in range(5)]
    body = batch(pods)
    with ThreadPoolExecutor(len(replicas) * 2) as pool:  # each replica twice: a send and its re-send
        answers = list(pool.map(lambda p: http("POST", f"{p.url}/alertmanager", body), replicas * 2))
    assert [status for status, _ in answers] == [200] * len(replicas) * 2, answers
    wait_until("a trigger for every pod", lambda: set(triggers_by_pod(sink)) == set(pods), 60)
    wait_until("an empty outbox", lambda: outbox_empty(postgres_url), 60)
    seen = triggers_by_pod(sink)
    assert {pod: sorted(ids.values()) for pod, ids in seen.items()} == {pod: [1] for pod in pods}
    new = sum(
        metric_value(http("GET", f"{p.url}/metrics")[1], "agent_sre_decisions_total", stage="rules", outcome="trigger")
        for p in replicas
    )
    assert new == len(pods)  # one decision per incident, across the three


def test_a_thousand_alerts_spread_over_three_replicas_give_one_event_per_incident(
    replicas: list[ControllerProcess], sink: CaptureSink, postgres_url: str
) -> None:
    pods = [f"spread-{i}" for i in range(1000)]
    webhooks = [pods[i : i + 25] for i in range(0, len(pods), 25)]
    # Every webhook goes to one replica, and its re-send to the next one.
    targets = [(replicas[i % REPLICAS], w) for i, w in enumerate(webhooks)]
    targets += [(replicas[(i + 1) % REPLICAS], w) for i, w in enumerate(webhooks)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda t: http("POST", f"{t[0].url}/alertmanager", batch(t[1]), timeout=60)[0], targets)
        )
    assert answers == [200] * len(targets)
    wait_until("a trigger for every pod", lambda: len(triggers_by_pod(sink)) == len(pods), 240)
    wait_until("an empty outbox", lambda: outbox_empty(postgres_url), 120)
    seen = triggers_by_pod(sink)
    assert set(seen) == set(pods)
    repeated = {pod: dict(ids) for pod, ids in seen.items() if list(ids.values()) != [1]}
    assert repeated == {}
    # Every replica took part.
    for proc in replicas:
        text = http("GET", f"{proc.url}/metrics")[1]
        assert metric_value(text, "agent_sre_alerts_received_total", source="alertmanager", status="firing") > 0


def test_a_replica_killed_mid_burst_with_the_sink_down_loses_nothing(
    tmp_path: Path, sink: CaptureSink, postgres_url: str
) -> None:
    replicas = start_replicas(tmp_path, sink, postgres_url, env=FAST_CLAIMS)
    try:
        killed_mid_burst(replicas, sink, postgres_url)
    finally:
        for proc in replicas:
            proc.stop()


def killed_mid_burst(replicas: list[ControllerProcess], sink: CaptureSink, postgres_url: str) -> None:
    sink.go_down()
    accepted: list[str] = []
    pods = iter(f"kill-{i}" for i in itertools.count())
    victim = replicas[1]
    for round_ in range(12):
        for proc in replicas:
            if not proc.alive():
                continue
            webhook = [next(pods) for _ in range(10)]
            status, _ = http("POST", f"{proc.url}/alertmanager", batch(webhook), timeout=30)
            if status == 200:
                accepted.extend(webhook)
        if round_ == 6:
            victim.signal(signal.SIGKILL)  # a crash: no shutdown code runs, its claims are left behind
            victim.popen.wait(30)  # type: ignore[union-attr]
    assert not victim.alive()
    assert len(accepted) > 200
    sink.come_up()
    survivors = [p for p in replicas if p.alive()]
    wait_until("every accepted alert triggered", lambda: set(accepted) <= set(triggers_by_pod(sink)), 180, survivors[0])
    wait_until("an empty outbox", lambda: outbox_empty(postgres_url), 120)
    seen = triggers_by_pod(sink)
    assert set(seen) == set(accepted)
    # One event id per incident (a delivery the victim made just before dying may be repeated: same id).
    assert {pod: len(ids) for pod, ids in seen.items()} == dict.fromkeys(accepted, 1)


def test_two_incidents_on_one_target_at_two_replicas_inside_the_cooldown_give_one_trigger(
    replicas: list[ControllerProcess], sink: CaptureSink, postgres_url: str
) -> None:
    for round_ in range(5):  # five targets; each gets two incidents (two startsAt) at two replicas at once
        pod = f"cool-{round_}"
        first = crashloop_payload(pod, starts_at="2026-05-01T10:04:30Z")
        second = crashloop_payload(pod, starts_at="2026-05-01T10:05:30Z")
        a, b = replicas[round_ % REPLICAS], replicas[(round_ + 1) % REPLICAS]
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda t: http("POST", f"{t[0].url}/alertmanager", t[1])[0], [(a, first), (b, second)])
            )
        assert answers == [200, 200]
    pods = [f"cool-{i}" for i in range(5)]
    wait_until("a trigger for every target", lambda: set(triggers_by_pod(sink)) == set(pods), 60)
    wait_until("an empty outbox", lambda: outbox_empty(postgres_url), 60)
    wait_until(
        "both incidents decided",
        lambda: (
            sum(
                metric_value(http("GET", f"{p.url}/metrics")[1], "agent_sre_policy_actions_total", action="cooldown")
                for p in replicas
            )
            == len(pods)
        ),
        60,
    )
    seen = triggers_by_pod(sink)
    assert {pod: sum(ids.values()) for pod, ids in seen.items()} == dict.fromkeys(pods, 1)
