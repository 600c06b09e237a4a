"""`trm-sre validate-policy` agrees with the real apiserver: both refuse these policies, naming the same field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.tools import cli
from tests.operator.support import Kube, policy_manifest, simple_spec

pytestmark = pytest.mark.envtest

# (id, spec, the field both must name). A schema type, an unknown field, a missing field, an enum, a set
# with a duplicate, a bound only the CRD has (not the pydantic model), and a CEL rule (the model's copy).
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("confidence-1.5", simple_spec(chain=[{"trm": {"minConfidence": 1.5}}]), "spec.chain[0].trm.minConfidence"),
    ("priority-not-an-integer", simple_spec(priority="high"), "spec.priority"),
    ("unknown-field", {**simple_spec(), "chian": []}, "spec.chian"),
    (
        "missing-allowed-functions",
        {k: v for k, v in simple_spec().items() if k != "allowedFunctions"},
        "spec.allowedFunctions",
    ),
    (
        "unknown-api",
        simple_spec(chain=[{"functionCalling": {"endpoint": "http://o:11434", "api": "anthropic"}}]),
        "spec.chain[0].functionCalling.api",
    ),
    (
        "duplicate-allowed-function",
        simple_spec(allowedFunctions=["pod-restart", "pod-restart"]),
        "spec.allowedFunctions[1]",
    ),
    ("alert-name-too-long", simple_spec(match={"alertNames": ["A" * 254]}), "spec.match.alertNames[0]"),
    ("approval-without-timeout", simple_spec(actions={"requireApproval": True}), "spec.actions.approvalTimeoutSeconds"),
    ("live-chain-all-shadow", simple_spec(chain=[{"trm": {}, "shadow": True}]), "spec.chain"),
]


def _offline(manifest: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "policy.yaml"
    path.write_text(manifest)
    code = cli.main(["validate-policy", "--quiet", str(path)])
    return code, capsys.readouterr().out


@pytest.mark.parametrize(("spec", "field"), [pytest.param(s, f, id=i) for i, s, f in CASES])
def test_both_refuse_naming_the_same_field(
    kube: Kube, spec: dict[str, Any], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = policy_manifest("invalid", spec)
    applied = kube.apply(manifest, check=False)
    assert applied.returncode != 0, f"the apiserver accepted it: {applied.stdout}"
    assert field in applied.stderr, applied.stderr
    code, out = _offline(manifest, tmp_path, capsys)
    assert code == 1, out
    assert f": default/invalid: {field}: " in out, out


def test_both_accept_a_valid_policy(kube: Kube, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = policy_manifest("fine", simple_spec())
    kube.apply(manifest)
    assert _offline(manifest, tmp_path, capsys) == (0, "")
