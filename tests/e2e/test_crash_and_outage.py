"""What the 2xx promises, under failure: a sink outage, and a SIGKILL in the middle of a burst.

The controller runs as a real child process (standalone, a real state dir, a
real HTTP sink). An alert answered 2xx must end up decided and triggered,
exactly once per incident id, whatever happened in between.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER
from tests.e2e.harness import (
    LARGE_BUDGET_POLICY,
    ControllerProcess,
    child_env,
    crashloop_payload,
    http,
    metric_value,
    slow_first_stage_policy,
    wait_until,
)
from tests.pipeline.sink import CaptureSink

pytestmark = pytest.mark.slow

OUTAGE_S = 30


def controller(tmp_path: Path, sink: CaptureSink, policy_text: str = LARGE_BUDGET_POLICY) -> ControllerProcess:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    args = [
        "--standalone",
        "--port",
        "0",
        "--no-model",
        "--state-dir",
        str(tmp_path / "state"),
        "--policies",
        str(policy),
    ]
    return ControllerProcess(args, child_env(K_SINK=sink.url), tmp_path / "trm-sre.log")


def ids_by_pod(sink: CaptureSink) -> dict[str, set[str]]:
    """For each pod, the CloudEvent ids of the triggers the sink accepted for it."""
    seen: dict[str, set[str]] = defaultdict(set)
    for request in sink.accepted_of(LAMBDA_TRIGGER):
        seen[request.data()["parameters"]["name"]].add(request.ce_id or "")
    return seen


def test_a_sink_outage_delays_triggers_but_loses_and_repeats_none(tmp_path: Path, sink: CaptureSink) -> None:
    proc = controller(tmp_path, sink)
    proc.start()
    pods = [f"outage-{i}" for i in range(20)]
    try:
        sink.go_down()
        for pod in pods:
            status, body = http("POST", f"{proc.url}/alertmanager", crashloop_payload(pod))
            assert status == 200, body
        time.sleep(OUTAGE_S)  # the sink stays down; deliveries fail and stay in the outbox
        assert sink.accepted_of(LAMBDA_TRIGGER) == []
        sink.come_up()
        wait_until("every trigger after the outage", lambda: set(ids_by_pod(sink)) == set(pods), 120, proc)
        wait_until(
            "an empty outbox",
            lambda: metric_value(http("GET", f"{proc.url}/metrics")[1], "agent_sre_outbox_depth") == 0,
            60,
            proc,
        )
        time.sleep(2)  # anything delivered twice would show up now
    finally:
        assert proc.stop() == 0, proc.log_tail()
    accepted = sink.accepted_ids(LAMBDA_TRIGGER)
    assert len(accepted) == len(pods) == len(set(accepted)), "a trigger was delivered twice"
    assert all(len(ids) == 1 for ids in ids_by_pod(sink).values())


@pytest.fixture
def slow_llm() -> Iterator[CaptureSink]:
    """An "LLM server" that answers after 0.2 s with nothing useful (the stage then hands over)."""
    with CaptureSink() as llm:
        llm.answer(200, delay_s=0.2)
        yield llm


def test_a_sigkill_mid_burst_loses_no_acknowledged_alert(
    tmp_path: Path, sink: CaptureSink, slow_llm: CaptureSink
) -> None:
    # The slow first stage keeps decisions behind the burst, so the kill finds acknowledged
    # alerts still undecided: the crash-recovery path, not only the at-least-once delivery.
    policy = slow_first_stage_policy(slow_llm.url)
    proc = controller(tmp_path, sink, policy)
    proc.start()
    pods = [f"burst-{i:03d}" for i in range(300)]
    acknowledged: set[str] = set()
    lock = threading.Lock()
    killed = threading.Event()

    def post(pod: str) -> None:
        try:
            status, _ = http("POST", f"{proc.url}/alertmanager", crashloop_payload(pod), timeout=10)
        except OSError:
            return  # refused or reset by the kill: not acknowledged, Alertmanager would retry
        if status == 200:
            with lock:
                acknowledged.add(pod)
                if len(acknowledged) >= 150 and not killed.is_set():
                    killed.set()
                    proc.kill()  # SIGKILL: mid-burst, with decisions and deliveries in flight

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in as_completed([pool.submit(post, pod) for pod in pods]):
            future.result()
    assert killed.is_set(), "the burst finished before the controller could be killed"
    assert 150 <= len(acknowledged) < len(pods)

    restarted = controller(tmp_path, sink, policy)
    restarted.start()
    try:
        assert "re-queued alerts recorded before a restart but never decided" in restarted.log_text()
        # Recovery: everything acknowledged before the kill is decided and triggered without being re-sent.
        wait_until(
            "a trigger for every acknowledged alert", lambda: acknowledged <= set(ids_by_pod(sink)), 180, restarted
        )
        # Then Alertmanager re-sends the whole burst (its retries and group re-sends).
        for pod in pods:
            status, body = http("POST", f"{restarted.url}/alertmanager", crashloop_payload(pod))
            assert status == 200, body
        wait_until("a trigger for every alert", lambda: set(ids_by_pod(sink)) == set(pods), 180, restarted)
        wait_until(
            "an empty outbox",
            lambda: metric_value(http("GET", f"{restarted.url}/metrics")[1], "agent_sre_outbox_depth") == 0,
            60,
            restarted,
        )
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    by_pod = ids_by_pod(sink)
    two_ids = {pod: ids for pod, ids in by_pod.items() if len(ids) != 1}
    assert not two_ids, f"incidents triggered under more than one id: {two_ids}"
    # At-least-once delivery: a trigger sent just before the kill may arrive again, always with the same id.
    assert len(set(sink.accepted_ids(LAMBDA_TRIGGER))) == len(pods)
