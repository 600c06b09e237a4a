"""The apiserver restarts while the controller runs: it reconnects, its policy index is intact, nothing fires twice.

The whole controller (`python -m controller run`, cluster mode, the operator
and the pipeline in one process, as the unprivileged operator user with
deploy/base's RBAC) runs against a private test apiserver, which is stopped
and started again on the same port and etcd in the middle of the test.
tests/operator covers the operator alone; this is the product: after the
restart the process is still up and ready, alerts for the policies it had
indexed are still decided by them, an incident triggered before the restart
is not triggered again, and policies created or edited after it are seen and
get their status written (the watches and the status writer reconnected).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER
from tests.e2e.harness import cluster_controller, http, wait_until
from tests.envtest.controlplane import ControlPlane
from tests.hardening.cluster import alert_body, is_ready, policy_manifest, policy_status
from tests.pipeline.sink import CaptureSink

pytestmark = [pytest.mark.envtest, pytest.mark.slow]

TOKEN = "restart-" + secrets.token_hex(8)


def _spec(alertname: str, priority: int = 0) -> dict[str, Any]:
    return {
        "priority": priority,
        "match": {"alertNames": [alertname]},
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
        "actions": {"cooldownSeconds": 600},
    }


def test_an_apiserver_restart_loses_no_policy_and_fires_nothing_twice(
    audited_control_plane: ControlPlane, sink: CaptureSink, tmp_path: Path
) -> None:
    cp = audited_control_plane
    namespace = f"restart-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", namespace)
    cp.kubectl("apply", "-f", "-", input=policy_manifest("before", namespace, _spec("RestartProbeBefore")))
    proc = cluster_controller(cp.operator_kubeconfig, sink.url, TOKEN, tmp_path)
    proc.args += ["--system-namespace", namespace]  # its policies target shop: only the system namespace may
    url = proc.start()
    try:
        wait_until("/readyz", lambda: http("GET", f"{url}/readyz")[0] == 200, 120, proc)
        wait_until("the first policy Ready", lambda: is_ready(cp, namespace, "before", 1), 60, proc)
        status, body = http("POST", f"{url}/alertmanager", alert_body("RestartProbeBefore", "cart-a"), token=TOKEN)
        assert (status, body["new_incidents"]) == (200, 1)
        wait_until("the first trigger", lambda: len(sink.accepted_of(LAMBDA_TRIGGER)) == 1, 60, proc)

        cp.restart_apiserver()
        assert proc.alive(), proc.log_tail()

        # The index survived: the policy indexed before the restart still decides, and the old incident
        # is still known (a re-send is a duplicate, not a second trigger).
        status, body = http("POST", f"{url}/alertmanager", alert_body("RestartProbeBefore", "cart-a"), token=TOKEN)
        assert (status, body["duplicates"]) == (200, 1)
        status, body = http("POST", f"{url}/alertmanager", alert_body("RestartProbeBefore", "cart-b"), token=TOKEN)
        assert (status, body["new_incidents"]) == (200, 1)
        status, reasoned = http(
            "POST",
            f"{url}/reason",
            {
                "task_type": "remediation",
                "context": {"labels": {"alertname": "RestartProbeBefore", "namespace": "shop", "pod": "x"}},
            },
            token=TOKEN,
        )
        assert status == 200 and f'"policy": "{namespace}/before"' in reasoned["answer"]

        # The watches reconnected: a policy created and one edited after the restart are seen and
        # get their status written.
        cp.kubectl("apply", "-f", "-", input=policy_manifest("after", namespace, _spec("RestartProbeAfter")))
        wait_until("the new policy Ready after the restart", lambda: is_ready(cp, namespace, "after", 1), 180, proc)
        cp.kubectl("apply", "-f", "-", input=policy_manifest("before", namespace, _spec("RestartProbeBefore", 5)))
        wait_until("the edit seen after the restart", lambda: is_ready(cp, namespace, "before", 2), 180, proc)
        status, body = http("POST", f"{url}/alertmanager", alert_body("RestartProbeAfter", "cart-c"), token=TOKEN)
        assert (status, body["new_incidents"]) == (200, 1)

        wait_until("three triggers", lambda: len(sink.accepted_of(LAMBDA_TRIGGER)) >= 3, 60, proc)
        assert http("GET", f"{url}/readyz")[0] == 200
        # The counters kept before the restart and those after it are both in the status.
        wait_until(
            "counters for both incidents of the first policy",
            lambda: (policy_status(cp, namespace, "before").get("counters") or {}).get("triggers") == 2,
            60,
            proc,
        )
    finally:
        assert proc.stop() == 0, proc.log_tail()

    triggers = sink.accepted_of(LAMBDA_TRIGGER)
    ids = [t.ce_id for t in triggers]
    assert len(ids) == len(set(ids)) == 3  # nothing triggered twice
    assert sorted(t.data()["parameters"]["name"] for t in triggers) == ["cart-a", "cart-b", "cart-c"]
    assert "Traceback" not in proc.log_text()
