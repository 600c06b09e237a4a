"""What a person sees in `kubectl describe rp NAME` when the operator refuses a policy the apiserver accepted.

The CRD's schema and CEL rules cannot know the runbook catalog, so these
policies are stored; the operator then marks them Ready=False and posts a
Warning Event. The Event must read well in `kubectl describe`: a CamelCase
reason, and one line naming the field and the problem, with no Python repr
or traceback leaking through.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.operator.support import Kube, RunningOperator, policy_manifest, simple_spec, wait_for

pytestmark = pytest.mark.envtest

# Leftovers of Python objects or errors that must never reach a person's terminal: a dict or list
# repr, a dataclass or pydantic repr, an exception repr, a traceback, an escaped newline.
UNREADABLE = re.compile(
    r"""\{'[^']*': |\['[^']*'[,\]]|\b(?:Problem|PolicySpec|CheckResult|ValidationError)\(|"""
    r"""\w+Error\(|Traceback|File "|"""
    r"""<class |object at 0x|\\n|\n"""
)


def _rules(**parameters: str) -> dict[str, Any]:
    return simple_spec(chain=[{"rules": [{"function": "pod-restart", "parameters": parameters}]}])


# (policy name, spec the apiserver accepts, expected reason, text the message must contain: field, then problem)
REFUSED: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    (
        "unknown-function",
        simple_spec(allowedFunctions=["pod-restart", "pod-delete"]),
        "UnknownFunction",
        ("spec.allowedFunctions[1]", "pod-delete", "is not in the runbook catalog", "pod-restart"),
    ),
    (
        "unknown-parameter",
        _rules(podName="{{ $labels.pod }}"),
        "UnknownParameter",
        ("spec.chain[0].rules[0].parameters.podName", "pod-restart has no parameter", "name, namespace, type"),
    ),
    (
        "bad-literal",
        _rules(name="{{ $labels.pod }}", type="statefulset"),
        "InvalidSpec",
        ("spec.chain[0].rules[0].parameters.type", "must be one of pod, deployment"),
    ),
    (
        "bad-template",
        _rules(name="{{ $labels.pod "),
        "InvalidSpec",
        ("spec.chain[0].rules[0].parameters.name", "invalid template", "unclosed"),
    ),
    (
        "bad-regex",
        simple_spec(match={"alertNameRegex": "Kube(Pod"}),
        "InvalidRegex",
        ("spec.match.alertNameRegex", "invalid regular expression", "Kube(Pod"),
    ),
]


def describe_events(kube: Kube, name: str) -> list[dict[str, str]]:
    """The Events table at the end of `kubectl describe rp NAME`, one dict per row."""
    out = kube.run("describe", "rp", name, "-n", kube.namespace).stdout
    section = out.split("\nEvents:", 1)
    assert len(section) == 2, f"no Events section in:\n{out}"
    lines = [line for line in section[1].splitlines() if line.strip()]
    if not lines or lines[0].strip() == "<none>":
        return []
    header, rule, *rows = lines
    assert header.split() == ["Type", "Reason", "Age", "From", "Message"], header
    assert set(rule.split()) == {"----", "------", "---", "-------"} or set(rule.replace(" ", "")) == {"-"}, rule
    start = header.index("Message")
    events = []
    for row in rows:
        type_, reason, age, source = row[:start].split()
        events.append({"type": type_, "reason": reason, "age": age, "from": source, "message": row[start:].strip()})
    return events


@pytest.mark.parametrize(("name", "spec", "reason", "expected"), [pytest.param(*case, id=case[0]) for case in REFUSED])
def test_refused_policy_has_a_readable_warning_in_kubectl_describe(
    kube: Kube, operator: RunningOperator, name: str, spec: dict[str, Any], reason: str, expected: tuple[str, ...]
) -> None:
    kube.apply(policy_manifest(name, spec))  # the apiserver accepts it: only the catalog says no
    warnings = wait_for(
        f"a Warning Event in `kubectl describe rp {name}`",
        lambda: [e for e in describe_events(kube, name) if e["type"] == "Warning"],
    )
    event = warnings[0]
    assert event["reason"] == reason
    assert re.fullmatch(r"(?:[A-Z][a-z0-9]+)+", event["reason"]), f"reason is not CamelCase: {event['reason']}"
    assert event["from"] == "trm-sre"
    message = event["message"]
    assert message.startswith(expected[0] + ":"), f"the message should start with the field: {message}"
    for text in expected:
        assert text in message, f"{text!r} not in: {message}"
    assert not UNREADABLE.search(message), f"unreadable message: {message}"
    assert 20 <= len(message) <= 300, f"message length {len(message)}: {message}"
    # The same text is the Ready condition's message, so `kubectl get rp -o yaml` agrees with describe.
    ready = kube.ready(name)
    assert ready is not None and ready["status"] == "False" and ready["reason"] == reason
    assert ready["message"] == message
    assert operator.index.get(f"{kube.namespace}/{name}") is None


def test_several_problems_stay_one_line_each_named(kube: Kube, operator: RunningOperator) -> None:
    spec = simple_spec(
        allowedFunctions=["pod-restart", "pod-delete"],
        match={"alertNameRegex": "Kube(Pod"},
        chain=[{"rules": [{"function": "pod-restart", "parameters": {"podName": "{{ $labels.pod }}"}}]}],
    )
    kube.apply(policy_manifest("many", spec))
    event = wait_for("a Warning Event", lambda: [e for e in describe_events(kube, "many") if e["type"] == "Warning"])[0]
    message = event["message"]
    for field in ("spec.match.alertNameRegex", "spec.allowedFunctions[1]", "spec.chain[0].rules[0].parameters.podName"):
        assert f"{field}: " in message, field
    assert message.count("; ") == 2 and "\n" not in message
    assert not UNREADABLE.search(message), message


def test_valid_policy_has_a_normal_indexed_event(kube: Kube, operator: RunningOperator) -> None:
    kube.apply(policy_manifest("fine", simple_spec()))
    events = wait_for(
        "an Indexed Event", lambda: [e for e in describe_events(kube, "fine") if e["reason"] == "Indexed"]
    )
    assert events[0]["type"] == "Normal"
    assert events[0]["message"] == "indexed generation 1: 1 function, chain trm -> rules"
