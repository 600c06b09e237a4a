"""deploy/examples/trigger-consumer: the example consumer takes what the controller really sends.

consumer.py runs as a subprocess on a loopback port, exactly as a user runs
it. Events reach it from the controller's own delivery code (`SinkClient`,
binary mode, the events built by `trigger_entry`) and from a standalone
`trm-sre run` deciding a real Alertmanager payload; structured mode is the
same event encoded by the SDK. The plain Deployment + Service are
dry-run server-side against the test apiserver; the Knative manifests are
only read (the test apiserver has no Knative CRDs).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from cloudevents.core.bindings.http import to_structured_event

from controller.engine.delivery import SinkClient, escalation_entry, to_cloudevent
from controller.engine.store import OutboxEntry
from controller.schemas.decision import LAMBDA_TRIGGER, REMEDIATION_ESCALATED, TriggerData
from runbooks import default_catalog
from tests.e2e.harness import ControllerProcess, child_env, fixture_payload, http, wait_until
from tests.envtest.controlplane import ControlPlane
from tests.packaging.helpers import REPO
from tests.pipeline.engine.builders import alert_dict, payload, sample_decision, sample_trigger

EXAMPLE = REPO / "deploy" / "examples" / "trigger-consumer"
CONSUMER = EXAMPLE / "consumer.py"
WAIT_S = 60.0


def load_consumer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trigger_consumer", CONSUMER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@dataclass
class Consumer:
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def logged(self, msg: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["msg"] == msg]

    def wait_for(self, msg: str, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + WAIT_S
        while len(found := self.logged(msg)) < count:
            assert self.popen.poll() is None, f"consumer.py exited:\n{self.log_path.read_text()}"
            assert time.monotonic() < deadline, f"no {msg!r} line within {WAIT_S:.0f} s:\n{self.log_path.read_text()}"
            time.sleep(0.05)
        return found


@pytest.fixture
def consumer(tmp_path: Path) -> Iterator[Consumer]:
    log_path = tmp_path / "consumer.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [sys.executable, str(CONSUMER), "--host", "127.0.0.1", "--port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + WAIT_S
        while not (match := re.search(r'"url": "(http://127\.0\.0\.1:\d+)"', log_path.read_text())):
            assert popen.poll() is None, f"consumer.py exited {popen.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, "consumer.py did not start listening"
            time.sleep(0.05)
        yield Consumer(popen, log_path, match.group(1))
    finally:
        popen.send_signal(signal.SIGTERM)
        try:
            code = popen.wait(15)
        except subprocess.TimeoutExpired:
            popen.kill()
            code = popen.wait(15)
    assert code == 0, f"consumer.py exited {code} on SIGTERM:\n{log_path.read_text()}"


def deliver(url: str, entry: OutboxEntry, tmp_path: Path) -> Any:
    async def send() -> Any:
        client = SinkClient(default_sink=url, jsonl_path=tmp_path / "unused.jsonl", attempts=2, backoff_initial_s=0.05)
        try:
            return await client.deliver(entry)
        finally:
            await client.aclose()

    return asyncio.run(send())


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_binary_trigger_from_the_sink_client_is_accepted_logged_and_planned(consumer: Consumer, tmp_path: Path) -> None:
    entry = sample_trigger()
    result = deliver(consumer.url, entry, tmp_path)
    assert result.delivered and result.status == 202 and result.attempts == 1, result
    (accepted,) = consumer.wait_for("lambda.trigger accepted")
    assert accepted["mode"] == "binary"
    assert accepted["id"] == "dec1-trigger" and accepted["source"] == "/trm-sre" and accepted["correlationid"] == "dec1"
    assert accepted["function"] == "pod-restart"
    assert accepted["parameters"] == {"name": "cart-1", "namespace": "shop", "type": "pod"}
    assert accepted["policy"] == "shop/crashloops" and accepted["alertname"] == "KubePodCrashLooping"
    (plan,) = consumer.wait_for("dry run: would run")
    assert plan["command"] == "kubectl delete pod cart-1 -n shop --wait=false"


def test_structured_mode_is_accepted_too(consumer: Consumer) -> None:
    entry = sample_trigger("scale-deployment", {"name": "cart", "namespace": "shop", "replicas": 3}, n=2)
    message = to_structured_event(to_cloudevent(entry, {}))
    assert message.headers["content-type"].startswith("application/cloudevents+json")
    status, _ = post(consumer.url, message.headers, message.body)
    assert status == 202
    (accepted,) = consumer.wait_for("lambda.trigger accepted")
    assert accepted["mode"] == "structured" and accepted["function"] == "scale-deployment"
    assert accepted["parameters"] == {"name": "cart", "namespace": "shop", "replicas": 3}
    assert consumer.wait_for("dry run: would run")[0]["command"] == "kubectl scale deployment cart -n shop --replicas=3"


def test_a_redelivered_trigger_is_acknowledged_but_handled_once(consumer: Consumer, tmp_path: Path) -> None:
    entry = sample_trigger()
    for _ in range(2):  # the controller resends the stored event, same id, after a crash or an outage
        assert deliver(consumer.url, entry, tmp_path).status == 202
    consumer.wait_for("duplicate trigger ignored")
    assert len(consumer.logged("lambda.trigger accepted")) == 1 and len(consumer.logged("dry run: would run")) == 1


def test_another_event_type_is_refused_with_400_and_not_retried(consumer: Consumer, tmp_path: Path) -> None:
    dec = sample_decision().model_copy(
        update={"outcome": "escalate", "function": None, "parameters": {}, "stage": None}
    )
    escalated = escalation_entry(dec, payload(alert_dict())[0], "/trm-sre", None, ["no stage proposed an allowed call"])
    assert escalated.type == REMEDIATION_ESCALATED
    result = deliver(consumer.url, escalated, tmp_path)
    assert (result.delivered, result.retryable, result.status, result.attempts) == (False, False, 400, 1)
    (rejected,) = consumer.wait_for("rejected")
    assert (
        rejected["status"] == 400 and REMEDIATION_ESCALATED in rejected["error"] and LAMBDA_TRIGGER in rejected["error"]
    )
    assert consumer.logged("lambda.trigger accepted") == []


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ({"Content-Type": "application/json"}, b'{"lambda_function": "pod-restart"}', "not a CloudEvent"),
        (
            {"ce-specversion": "1.0", "ce-type": LAMBDA_TRIGGER, "ce-source": "/x", "Content-Type": "application/json"},
            b"{}",
            "missing CloudEvent attribute(s): id",
        ),
        (
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-type": LAMBDA_TRIGGER,
                "ce-source": "/x",
                "Content-Type": "application/json",
            },
            b'{"lambda_function": "pod-restart"}',
            "data.parameters must be an object",
        ),
        (
            {
                "ce-specversion": "1.0",
                "ce-id": "2",
                "ce-type": LAMBDA_TRIGGER,
                "ce-source": "/x",
                "Content-Type": "application/json",
            },
            b'{"lambda_function": "reboot-node", "parameters": {}}',
            "no handler for function 'reboot-node'",
        ),
        ({"Content-Type": "application/cloudevents+json"}, b"[1, 2]", "must be a JSON object"),
    ],
    ids=["plain-json", "no-id", "no-parameters", "unknown-function", "structured-not-an-object"],
)
def test_malformed_requests_get_400_saying_why(
    consumer: Consumer, headers: dict[str, str], body: bytes, problem: str
) -> None:
    status, answer = post(consumer.url, headers, body)
    assert status == 400 and problem in json.loads(answer)["error"], answer


def test_health_endpoint(consumer: Consumer) -> None:
    with urllib.request.urlopen(f"{consumer.url}/healthz", timeout=5) as response:
        assert response.status == 200


@pytest.mark.slow
def test_a_real_alert_through_the_standalone_controller_reaches_the_consumer(
    consumer: Consumer, tmp_path: Path
) -> None:
    """README's first step (`trm-sre run --standalone`) with K_SINK pointing at the consumer."""
    proc = ControllerProcess(
        ["--standalone", "--port", "0", "--no-model", "--state-dir", str(tmp_path / "state")],
        child_env(K_SINK=consumer.url),
        tmp_path / "trm-sre.log",
    )
    proc.start()
    try:
        status, body = http("POST", f"{proc.url}/alertmanager", fixture_payload("crashloop.json"))
        assert status == 200 and body["new_incidents"] == 1, body
        (accepted,) = consumer.wait_for("lambda.trigger accepted")

        def delivered() -> dict[str, Any] | None:
            status, body = http("GET", f"{proc.url}/decisions/{accepted['correlationid']}")
            assert status == 200, body
            done = [d for d in body["deliveries"] if d["type"] == LAMBDA_TRIGGER and d["state"] == "delivered"]
            return done[0] if done else None

        wait_until("the trigger marked delivered", delivered, WAIT_S, proc)
        delivery = delivered()
    finally:
        assert proc.stop() == 0, proc.log_tail()
    assert accepted["mode"] == "binary" and accepted["function"] == "pod-restart"
    assert accepted["parameters"] == {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop", "type": "pod"}
    assert accepted["alertname"] == "KubePodCrashLooping" and accepted["policy"] == "trm-sre/default"
    # The id README.md documents: sha256("<fingerprint>@<startsAt>|<namespace>/<policy>")[:32] + "-trigger".
    alert = fixture_payload("crashloop.json")["alerts"][0]
    key = f"{alert['fingerprint']}@2026-05-01T10:04:30.512339Z|trm-sre/default"
    assert accepted["correlationid"] == hashlib.sha256(key.encode()).hexdigest()[:32]
    assert accepted["id"] == f"{accepted['correlationid']}-trigger" and accepted["source"] == "/trm-sre"
    assert (
        consumer.wait_for("dry run: would run")[0]["command"]
        == "kubectl delete pod cart-7f9c6d5b8-x2k4q -n shop --wait=false"
    )
    # The consumer's 202 is what the controller recorded: delivered on the first attempt.
    assert delivery is not None and (delivery["last_status"], delivery["attempts"]) == (202, 1), delivery


def test_every_runbook_function_has_a_dry_run_handler() -> None:
    module = load_consumer()
    catalog = default_catalog()
    assert set(module.HANDLERS) == set(catalog.names)
    for runbook in catalog.functions:
        for example in runbook.examples:
            command = module.HANDLERS[runbook.name](example.parameters)
            assert command and all(isinstance(part, str) for part in command), runbook.name
    assert module.TRIGGER_TYPE == LAMBDA_TRIGGER


def test_readme_documents_the_event_contract() -> None:
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    for name in (*TriggerData.model_fields, "correlationid", "lambdafunction", "policy", "alertname", "subject"):
        assert f"`{name}`" in readme, f"README.md does not document {name}"
    for text in (LAMBDA_TRIGGER, "/trm-sre", "-trigger", "202", "400", "binary", "structured", "dry-run"):
        assert text in readme, text


def test_knative_manifests_subscribe_the_service_to_triggers() -> None:
    docs = list(yaml.safe_load_all((EXAMPLE / "knative.yaml").read_text(encoding="utf-8")))
    service = next(d for d in docs if d["kind"] == "Service")
    trigger_ = next(d for d in docs if d["kind"] == "Trigger")
    assert service["apiVersion"] == "serving.knative.dev/v1"
    assert trigger_["spec"]["filter"]["attributes"]["type"] == LAMBDA_TRIGGER
    ref = trigger_["spec"]["subscriber"]["ref"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        service["apiVersion"],
        "Service",
        service["metadata"]["name"],
    )
    (container,) = service["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 8080


def test_plain_manifests_pass_a_server_side_dry_run(control_plane: ControlPlane, namespace: str) -> None:
    """Schema, defaults and admission (restricted Pod Security included) of the Deployment and Service."""
    control_plane.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    manifest = EXAMPLE / "deployment.yaml"
    res = control_plane.kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", str(manifest))
    assert sorted(res.stdout.splitlines()) == [
        "deployment.apps/trm-sre-trigger-consumer created (server dry run)",
        "service/trm-sre-trigger-consumer created (server dry run)",
    ], res.stdout
    assert "PodSecurity" not in res.stderr, res.stderr
    deployment, service = yaml.safe_load_all(manifest.read_text(encoding="utf-8"))
    # The pod the Deployment would create, admitted (not only warned about) under restricted Pod Security.
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "consumer-pod", **template["metadata"]},
        "spec": template["spec"],
    }
    res = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod))
    assert "created (server dry run)" in res.stdout and "PodSecurity" not in res.stderr, res.stderr
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == template["spec"]["containers"][0]["ports"][0]["name"]
    knative_service = next(
        d for d in yaml.safe_load_all((EXAMPLE / "knative.yaml").read_text()) if d["kind"] == "Service"
    )
    assert (
        template["spec"]["containers"][0]["image"]
        == knative_service["spec"]["template"]["spec"]["containers"][0]["image"]
    )
