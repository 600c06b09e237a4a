"""`trm-sre validate-policy`: the CRD's schema and the operator's checks, offline, one line per problem."""

from __future__ import annotations

import copy
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.tools import cli
from controller.tools.crd_schema import CEL_RULES_ENFORCED_BY_MODEL, DEFAULT_CRD_PATH, CrdSchema, structural_problems
from controller.tools.validate_policy import Validator, load_crd
from runbooks import default_catalog

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "deploy" / "samples").glob("*.yaml"))
API_VERSION = "remediation.homelab.io/v1alpha1"


def spec(**overrides: Any) -> dict[str, Any]:
    """A valid spec (static annotation, TRM at chain[1], rules at chain[2]); keywords replace top-level fields."""
    base: dict[str, Any] = {
        "match": {"alertNames": ["KubePodCrashLooping"]},
        "allowedFunctions": ["pod-restart"],
        "chain": [
            {"staticAnnotation": {}},
            {"trm": {"minConfidence": 0.8}},
            {"rules": [{"function": "pod-restart", "parameters": {"name": "{{ $labels.pod }}", "type": "pod"}}]},
        ],
    }
    return {**base, **overrides}


def with_stage(index: int, stage: dict[str, Any]) -> dict[str, Any]:
    changed = spec()
    changed["chain"][index] = stage
    return changed


def manifest(body: dict[str, Any], name: str = "bad", **top: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "RemediationPolicy", "metadata": {"name": name}, "spec": body, **top}


def dump(*docs: Any) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["validate-policy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _fc(**fields: Any) -> dict[str, Any]:
    return {"functionCalling": {"endpoint": "http://ollama:11434", **fields}}


def _rules(function: str = "pod-restart", **parameters: str) -> dict[str, Any]:
    return {"rules": [{"function": function, "parameters": parameters or {"name": "{{ $labels.pod }}"}}]}


# (id, manifest, the field each problem line names and a fragment of its message), one entry per expected line.
INVALID: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    ("wrong-type", manifest(spec(priority="high")), [("spec.priority", 'must be integer (got string "high")')]),
    (
        "confidence-1.5",
        manifest(with_stage(1, {"trm": {"minConfidence": 1.5}})),
        [("spec.chain[1].trm.minConfidence", "must be <= 1 (got 1.5)")],
    ),
    ("unknown-field", manifest({**spec(), "chian": []}), [("spec.chian", 'unknown field; did you mean "chain"?')]),
    (
        "unknown-field-in-stage",
        manifest(with_stage(0, {"staticAnnotation": {"function": "x"}})),
        [("spec.chain[0].staticAnnotation.function", "unknown field (this object takes no fields)")],
    ),
    (
        "missing-required",
        manifest({k: v for k, v in spec().items() if k != "allowedFunctions"}),
        [
            ("spec.allowedFunctions", "required field is missing"),
            ("spec.chain[2].rules[0].function", "pod-restart is not in spec.allowedFunctions"),
        ],
    ),
    (
        "function-not-in-catalog",
        manifest(spec(allowedFunctions=["pod-restart", "nuke-cluster"])),
        [("spec.allowedFunctions[1]", "'nuke-cluster' is not in the runbook catalog")],
    ),
    (
        "rule-function-not-allowed",
        manifest(with_stage(2, _rules("scale-deployment", name="x", namespace="y", replicas="2"))),
        [("spec.chain[2].rules[0].function", "scale-deployment is not in spec.allowedFunctions")],
    ),
    (
        "bad-regex",
        manifest(spec(match={"alertNameRegex": "(Kube"})),
        [("spec.match.alertNameRegex", "invalid regular expression '(Kube'")],
    ),
    (
        "bad-matcher-regex",
        manifest(spec(match={"matchers": [{"label": "pod", "op": "=~", "value": "[a-"}]})),
        [("spec.match.matchers[0].value", "invalid regular expression")],
    ),
    (
        "unknown-template-parameter",
        manifest(with_stage(2, _rules(nme="{{ $labels.pod }}"))),
        [("spec.chain[2].rules[0].parameters.nme", "pod-restart has no parameter 'nme'")],
    ),
    (
        "malformed-template",
        manifest(with_stage(2, _rules(name="{{ $labels.pod "))),
        [("spec.chain[2].rules[0].parameters.name", "invalid template")],
    ),
    (
        "literal-the-function-refuses",
        manifest(with_stage(2, _rules(name="x", type="cronjob"))),
        [("spec.chain[2].rules[0].parameters.type", "type must be one of pod, deployment")],
    ),
    (
        "bad-enum-api",
        manifest(with_stage(1, _fc(api="anthropic"))),
        [("spec.chain[1].functionCalling.api", 'must be one of "ollama", "openai" (got "anthropic")')],
    ),
    (
        "endpoint-scheme",
        manifest(with_stage(1, _fc(endpoint="ftp://ollama"))),
        [("spec.chain[1].functionCalling.endpoint", 'must match ^https?:// (got "ftp://ollama")')],
    ),
    ("empty-chain", manifest(spec(chain=[])), [("spec.chain", "must have at least 1 item (got 0)")]),
    (
        "two-stage-types",
        manifest(with_stage(1, {"trm": {}, "staticAnnotation": {}})),
        [("spec.chain[1]", "each chain stage must set exactly one of staticAnnotation, trm, functionCalling, rules")],
    ),
    (
        "approval-without-timeout",
        manifest(spec(actions={"requireApproval": True})),
        [("spec.actions.approvalTimeoutSeconds", "requireApproval needs approvalTimeoutSeconds")],
    ),
    (
        "duplicate-in-set",
        manifest(spec(allowedFunctions=["pod-restart", "pod-restart"])),
        [("spec.allowedFunctions[1]", 'duplicate value "pod-restart" (also at [0])')],
    ),
    # A bound only the CRD sets (the pydantic model has none): the apiserver refuses it, so must we.
    (
        "alert-name-too-long",
        manifest(spec(match={"alertNames": ["A" * 254]})),
        [("spec.match.alertNames[0]", "must be at most 253 characters long (got 254)")],
    ),
    (
        "negative-cooldown",
        manifest(spec(actions={"cooldownSeconds": -1})),
        [("spec.actions.cooldownSeconds", "must be >= 0")],
    ),
    (
        "wrong-api-version",
        {**manifest(spec()), "apiVersion": "remediation.homelab.io/v1beta1"},
        [("apiVersion", "must be remediation.homelab.io/v1alpha1")],
    ),
    (
        "missing-name",
        {**manifest(spec()), "metadata": {"namespace": "shop"}},
        [("metadata.name", "required field is missing")],
    ),
    (
        "missing-spec",
        {k: v for k, v in manifest(spec()).items() if k != "spec"},
        [("spec", "required field is missing")],
    ),
]


@pytest.fixture(scope="module")
def crd() -> CrdSchema:
    return load_crd()


@pytest.fixture
def validator(crd: CrdSchema) -> Validator:
    return Validator(default_catalog(), crd)


def test_every_sample_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([str(p) for p in SAMPLES], capsys)
    assert code == 0, out + err
    lines = out.splitlines()
    for sample in SAMPLES:
        name = yaml.safe_load(sample.read_text())["metadata"]["name"]
        assert any(line.startswith(f"{sample}: default/{name}: valid (") for line in lines), out
    assert lines[-1] == f"{len(SAMPLES)} valid"
    assert err == ""  # every CEL rule is enforced by the model too: no note


def test_a_valid_policy_says_how_many_stages_and_functions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(dump(manifest(spec(), name="ok", metadata={"name": "ok", "namespace": "shop"})))
    assert run([str(path)], capsys) == (0, f"{path}: shop/ok: valid (3 stages, 1 allowed function)\n", "")


@pytest.mark.parametrize(("doc", "expected"), [pytest.param(d, e, id=i) for i, d, e in INVALID])
def test_invalid_policy_exits_1_naming_the_field(
    doc: dict[str, Any], expected: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(dump(doc))
    code, out, _ = run([str(path)], capsys)
    assert code == 1, out
    metadata = doc.get("metadata", {})
    key = f"{metadata.get('namespace', 'default')}/{metadata.get('name', '?')}"
    lines = out.splitlines()
    assert len(lines) == len(expected), out  # one line per problem, nothing reported twice
    for line, (field, fragment) in zip(lines, expected):
        assert line.startswith(f"{path}:1: {key}: {field}: "), line
        assert fragment in line.split(f"{field}: ", 1)[1], line


def test_cel_rules_are_enforced_by_the_model_so_no_note(validator: Validator) -> None:
    assert validator.crd is not None
    assert {" ".join(r.rule.split()) for r in validator.crd.cel_rules} == set(CEL_RULES_ENFORCED_BY_MODEL)
    assert validator.crd.unchecked_rules == ()
    assert [r.path for r in validator.crd.cel_rules] == ["spec", "spec", "spec.chain[*]", "spec.actions"]


def test_a_cel_rule_the_model_does_not_enforce_is_named_in_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crd = yaml.safe_load(DEFAULT_CRD_PATH.read_text())
    actions = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["actions"]
    actions["x-kubernetes-validations"].append({"rule": "self.windowSeconds >= self.cooldownSeconds", "message": "m"})
    crd_path = tmp_path / "crd.yaml"
    crd_path.write_text(yaml.safe_dump(crd))
    code, out, err = run(["--crd", str(crd_path), str(SAMPLES[0])], capsys)
    assert code == 0 and "valid" in out
    assert (
        "spec.actions: the CEL rule 'self.windowSeconds >= self.cooldownSeconds' is checked only by the apiserver"
        in err
    )
    assert "kubectl apply --dry-run=server" in err
    assert run(["--quiet", "--crd", str(crd_path), str(SAMPLES[0])], capsys) == (0, "", "")


def test_a_crd_using_a_keyword_the_validator_lacks_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crd = yaml.safe_load(DEFAULT_CRD_PATH.read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["priority"][
        "multipleOf"
    ] = 10
    crd_path = tmp_path / "crd.yaml"
    crd_path.write_text(yaml.safe_dump(crd))
    code, out, err = run(["--crd", str(crd_path), str(SAMPLES[0])], capsys)
    assert code == 2 and out == ""
    assert "multipleOf" in err and str(crd_path) in err


def test_multi_document_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "all.yaml"
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"}}
    bad = manifest(with_stage(1, {"trm": {"minConfidence": 1.5}}), name="too-sure")
    path.write_text(dump(manifest(spec(), name="first"), bad, configmap) + "---\n")
    code, out, _ = run([str(path)], capsys)
    assert code == 1
    assert out.splitlines() == [
        f"{path}: default/first: valid (3 stages, 1 allowed function)",
        f"{path}:2: default/too-sure: spec.chain[1].trm.minConfidence: must be <= 1 (got 1.5)",
        f"{path}:3: ConfigMap shop/settings: skipped (not a RemediationPolicy)",
        "1 valid, 1 invalid, 1 skipped",
    ]
    assert run(["--quiet", str(path)], capsys)[:2] == (
        1,
        f"{path}:2: default/too-sure: spec.chain[1].trm.minConfidence: must be <= 1 (got 1.5)\n",
    )


def test_a_file_with_only_other_kinds_is_skipped_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deployment.yaml"
    path.write_text(dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}))
    assert run([str(path)], capsys) == (0, f"{path}:1: Deployment web: skipped (not a RemediationPolicy)\n", "")


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(dump(manifest(spec(), name="piped"))))
    assert run(["-"], capsys) == (0, "<stdin>: default/piped: valid (3 stages, 1 allowed function)\n", "")


def test_a_directory_means_its_yaml_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([str(SAMPLES[0].parent)], capsys)
    assert code == 0 and out.count(": valid (") == len(SAMPLES)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("apiVersion: v1\nkind: RemediationPolicy\nspec:\n  chain: [\n", 5, id="unclosed-flow"),
        pytest.param("kind: RemediationPolicy\nspec:\n\tpriority: 1\n", 3, id="tab"),
        pytest.param("kind: RemediationPolicy\nspec: {}\nspec: {}\n", 3, id="duplicate-key"),
    ],
)
def test_unreadable_yaml_exits_2_naming_file_and_line(
    text: str, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, broken = tmp_path / "good.yaml", tmp_path / "broken.yaml"
    good.write_text(dump(manifest(spec(), name="good")))
    broken.write_text(text)
    code, out, err = run([str(good), str(broken)], capsys)
    assert code == 2
    assert f"trm-sre validate-policy: error: {broken}:{line}: not valid YAML (" in err
    assert f"{good}: default/good: valid" in out  # the other files are still checked


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and f"error: {tmp_path / 'nope.yaml'}: no such file" in err


def test_an_empty_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n---\n")
    code, _, err = run([str(path)], capsys)
    assert code == 2 and f"{path}: no objects in it" in err


def test_a_document_that_is_not_an_object_is_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n")
    code, out, _ = run([str(path)], capsys)
    assert code == 1 and out.startswith(f"{path}:1: not a Kubernetes object (a YAML mapping with apiVersion and kind)")


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mixed.yaml"
    other = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    path.write_text(dump(manifest(spec(), name="ok"), manifest(spec(priority=5000), name="loud"), other))
    code, out, err = run(["--json", str(path), str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "missing.yaml: no such file" in err
    results = json.loads(out)
    assert [r["status"] for r in results] == ["valid", "invalid", "skipped", "error"]
    ok, loud, skipped, missing = results
    assert ok == {
        "file": str(path),
        "document": 1,
        "kind": "RemediationPolicy",
        "namespace": None,
        "name": "ok",
        "status": "valid",
        "problems": [],
        "stages": 3,
        "allowedFunctions": 1,
    }
    assert loud["problems"] == [
        {"field": "spec.priority", "message": "must be <= 1000 (got 5000)", "reason": "OutOfRange", "check": "schema"}
    ]
    assert (skipped["kind"], skipped["document"]) == ("Secret", 3)
    assert missing == {
        "file": str(tmp_path / "missing.yaml"),
        "document": None,
        "kind": None,
        "namespace": None,
        "name": None,
        "status": "error",
        "problems": [],
        "detail": "no such file",
    }
    code, out, _ = run(["--json", "--quiet", str(path)], capsys)
    assert code == 1 and [r["name"] for r in json.loads(out)] == ["loud"]


def test_json_says_which_check_found_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(dump(manifest(spec(priority=5000, allowedFunctions=["pod-restart", "nuke"]))))
    problems = json.loads(run(["--json", str(path)], capsys)[1])[0]["problems"]
    assert [(p["check"], p["reason"], p["field"]) for p in problems] == [
        ("schema", "OutOfRange", "spec.priority"),
        ("operator", "UnknownFunction", "spec.allowedFunctions[1]"),
    ]


def test_the_same_policy_twice_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(dump(manifest(spec(), name="p"), manifest(spec(), name="p")))
    code, out, _ = run([str(path)], capsys)
    assert code == 1 and f"{path}:2: default/p: metadata.name: default/p is already defined at {path}:1" in out


def test_a_v1_list_is_validated_item_by_item(validator: Validator) -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [manifest(spec(), name="a"), manifest(spec(priority="x"), name="b")],
    }
    results = validator.validate_text(dump(listed), "list.yaml")
    assert [(r.name, r.status, r.item) for r in results] == [("a", "valid", 0), ("b", "invalid", 1)]


def test_a_bare_equals_sign_is_a_string_as_in_kubectl(validator: Validator) -> None:
    text = dump(manifest(spec(match={"matchers": [{"label": "team", "op": "=", "value": "web"}]}))).replace("'='", "=")
    assert "op: =\n" in text
    assert [r.status for r in validator.validate_text(text, "eq.yaml")] == ["valid"]


def test_status_in_a_manifest_is_ignored_like_the_apiserver_does(validator: Validator) -> None:
    doc = manifest(spec(), status={"mode": "whatever", "extra": 1})
    assert [r.status for r in validator.validate_text(dump(doc), "s.yaml")] == ["valid"]


def test_without_the_crd_only_the_operator_checks_run() -> None:
    no_crd = Validator(default_catalog(), None)
    doc = manifest(spec(match={"alertNames": ["A" * 254]}, priority=5000))
    [result] = no_crd.validate_text(dump(doc), "x.yaml")
    assert [(p.field, p.reason) for p in result.problems] == [("spec.priority", "InvalidSpec")]  # no alertNames bound


def test_schema_walker_details() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}, "f": {"type": "number"}}}
    assert structural_problems({"n": 2.0, "f": 1}, schema) == []  # integral floats are integers, ints are numbers
    assert [str(p) for p in structural_problems({"n": True, "f": "1"}, schema)] == [
        "n: must be integer (got boolean true)",
        'f: must be number (got string "1")',
    ]
    assert structural_problems({"n": None}, {**schema, "required": ["n"]})[0].message == "required field is missing"
    assert structural_problems(["a"], {"type": "object"})[0].message == "must be object (got array)"


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["validate-policy", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "trm-sre validate-policy deploy/samples/*.yaml" in out and "exit status" in out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["validate-policy"])
    assert exit_info.value.code == 2


def test_every_subcommand_still_reaches_its_handler() -> None:
    parser = cli.build_parser()
    for argv, handler in (
        (["run"], cli.cmd_run),
        (["select"], cli.cmd_select),
        (["explain", "x"], cli.cmd_explain),
        (["catalog"], cli.cmd_catalog),
        (["validate-policy", "x"], cli.cmd_validate_policy),
    ):
        assert parser.parse_args(argv).handler is handler


def test_the_manifests_are_not_modified(validator: Validator) -> None:
    doc = manifest(spec())
    before = copy.deepcopy(doc)
    validator.validate_document(doc, "x.yaml", 1)
    assert doc == before


def test_kind_less_garbage_is_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_text("foo: bar\n")
    code, out, _ = run([str(path)], capsys)
    assert code == 1
    assert out.splitlines() == [
        f"{path}:1: apiVersion: required field is missing",
        f"{path}:1: kind: required field is missing",
    ]


def test_without_a_crd_file_a_note_says_the_schema_is_not_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import controller.tools.validate_policy as validation

    monkeypatch.setattr(validation, "DEFAULT_CRD_PATH", tmp_path / "absent.yaml")  # as in an installed package
    code, out, err = run([str(SAMPLES[0])], capsys)
    assert code == 0 and ": valid (" in out
    assert "the CRD schema is not checked" in err and "--crd FILE" in err


def test_the_package_carries_the_same_crd_as_the_repository() -> None:
    """`controller/crds` links to `crds/` and is package data, so an installed `validate-policy` has the CRD."""
    import tomllib

    repo = Path(__file__).resolve().parents[2]
    assert DEFAULT_CRD_PATH.read_bytes() == (repo / "crds" / "remediationpolicy.yaml").read_bytes()
    package_data = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "crds/*.yaml" in package_data["controller"]


@pytest.mark.parametrize(
    "metadata",
    [{"name": "ok\n"}, {"name": "ok", "namespace": "shop\n"}, {"name": "ok\u200b"}],
    ids=ascii,
)
def test_a_name_or_namespace_with_a_trailing_newline_or_invisible_character_is_invalid(metadata: dict) -> None:
    from controller.tools.crd_schema import metadata_problems

    assert metadata_problems(metadata), metadata


@pytest.mark.parametrize("value", ["shop\n", "*\n"], ids=ascii)
def test_a_crd_pattern_ending_in_dollar_does_not_accept_a_trailing_newline(value: str) -> None:
    from controller.tools.crd_schema import structural_problems

    schema = {"type": "string", "pattern": r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"}
    assert structural_problems(value, schema, "spec.targetNamespaces[0]")
    assert structural_problems(value.rstrip("\n"), schema, "spec.targetNamespaces[0]") == []


TENANT_POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: grab-all, namespace: team-a}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  targetNamespaces: ["*"]
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}"}
  actions: {sink: "http://evil.example/"}
"""


def test_a_policy_outside_the_system_namespace_may_not_target_others_or_set_a_sink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.tools.cli import main

    path = tmp_path / "tenant.yaml"
    path.write_text(TENANT_POLICY)
    assert main(["validate-policy", str(path)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "spec.targetNamespaces[0]" in text and "may only target team-a" in text
    assert "spec.actions.sink" in text and "cannot set a sink" in text
    # The same policy in the controller's namespace is valid.
    path.write_text(TENANT_POLICY.replace("namespace: team-a", "namespace: trm-sre"))
    assert main(["validate-policy", str(path)]) == 0
    path.write_text(TENANT_POLICY.replace("namespace: team-a", "namespace: ops"))
    assert main(["validate-policy", "--system-namespace", "ops", str(path)]) == 0
