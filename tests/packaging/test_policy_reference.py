"""docs/policy-reference.md is generated from the CRD (`make docs`) and says everything the schema says."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from controller.decision import policy_checks
from controller.operator import handlers as operator
from controller.schemas.policy import PolicySpec
from controller.tools.policy_reference import CRD_PATH, DOC_PATH, load_crd, main, render
from runbooks import default_catalog
from tests.packaging.helpers import REPO


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return load_crd(CRD_PATH)


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC_PATH.read_text(encoding="utf-8")


def _root(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def leaves(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Leaf fields, written independently of the generator: `a[]` for list items, `a.*` for map values."""
    if schema.get("properties"):
        for name, child in schema["properties"].items():
            yield from leaves(child, f"{path}.{name}")
    elif schema.get("type") == "array" and (schema.get("items") or {}).get("properties"):
        yield from leaves(schema["items"], f"{path}[]")
    elif isinstance(schema.get("additionalProperties"), Mapping) and schema["additionalProperties"].get("properties"):
        yield from leaves(schema["additionalProperties"], f"{path}.*")
    else:
        yield path, schema


def doc_row(doc: str, path: str) -> str:
    rows = [line for line in doc.splitlines() if line.startswith(f"| `{path}` |")]
    assert len(rows) == 1, f"{path}: expected one table row, found {len(rows)}"
    return rows[0]


def unescape(text: str) -> str:
    return text.replace("\\|", "|")


def test_committed_reference_is_the_generators_output(crd: dict[str, Any], doc: str) -> None:
    assert doc == render(crd), "docs/policy-reference.md is stale: run `make docs` and commit the result"
    assert main(["--check"]) == 0


def test_check_mode_fails_on_a_stale_file(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "policy-reference.md"
    stale.write_text(DOC_PATH.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert "make docs" in capsys.readouterr().err
    assert main(["--write", str(stale)]) == 0 and main(["--check", str(stale)]) == 0


def test_rendering_is_deterministic(crd: dict[str, Any]) -> None:
    assert render(crd) == render(copy.deepcopy(crd)) == render(yaml.safe_load(CRD_PATH.read_text(encoding="utf-8")))


@pytest.mark.parametrize("section", ["spec", "status"])
def test_every_leaf_field_has_a_row_with_its_type_description_and_constraints(
    crd: dict[str, Any], doc: str, section: str
) -> None:
    found = list(leaves(_root(crd)["properties"][section], section))
    assert len(found) > (20 if section == "spec" else 15)
    for path, schema in found:
        row = unescape(doc_row(doc, path))
        description = " ".join(str(schema.get("description", "")).split())
        assert description and description in row, f"{path}: description missing"
        shown = {"array": "list of", "object": "map of" if "additionalProperties" in schema else "object"}
        assert f"| {shown.get(schema['type'], schema['type'])}" in row, f"{path}: type missing"
        if "default" in schema:
            assert f"`{json.dumps(schema['default'])}`" in row, f"{path}: default {schema['default']!r} missing"
        for value in schema.get("enum") or ():
            assert f"`{value}`" in row, f"{path}: enum value {value!r} missing"
        for key in ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "maxProperties"):
            if key in schema:
                assert str(schema[key]) in row, f"{path}: {key} missing"
        inner = schema.get("items") or schema.get("additionalProperties") or {}
        for key in ("maxLength", "minLength"):
            if isinstance(inner, Mapping) and key in inner:
                assert f"each {'item' if schema['type'] == 'array' else 'value'}:" in row and str(inner[key]) in row, (
                    path
                )
        for pattern in (schema.get("pattern"), inner.get("pattern") if isinstance(inner, Mapping) else None):
            if pattern:
                assert f"`{pattern}`" in row, f"{path}: pattern missing"


def test_required_fields_are_marked(crd: dict[str, Any], doc: str) -> None:
    spec = _root(crd)["properties"]["spec"]
    for name in spec["required"]:
        assert "| yes |" in doc_row(doc, f"spec.{name}")
    assert "| yes |" in doc_row(doc, "spec.chain[].functionCalling.endpoint")
    assert "| yes |" not in doc_row(doc, "spec.priority")


def test_cel_rules_printer_columns_short_names_and_categories_are_listed(crd: dict[str, Any], doc: str) -> None:
    version = crd["spec"]["versions"][0]
    rules = []

    def collect(schema: Mapping[str, Any]) -> None:
        rules.extend(schema.get("x-kubernetes-validations") or ())
        for child in (schema.get("properties") or {}).values():
            collect(child)
        if isinstance(schema.get("items"), Mapping):
            collect(schema["items"])

    collect(_root(crd))
    assert len(rules) >= 3
    plain = unescape(doc)
    for rule in rules:
        assert f"`{rule['rule']}`" in plain and rule["message"] in plain
    for column in version["additionalPrinterColumns"]:
        assert f"| {column['name']} | {column['type']} | `{column['jsonPath']}` |" in plain
    for name in (*crd["spec"]["names"]["shortNames"], *crd["spec"]["names"]["categories"]):
        assert f"`{name}`" in doc
    assert f"`{crd['spec']['group']}/{version['name']}`" in doc


def test_every_ready_reason_the_operator_sets_is_explained(doc: str) -> None:
    reasons = [v for module in (operator, policy_checks) for k, v in vars(module).items() if k.startswith("REASON_")]
    assert len(reasons) >= 5
    for reason in reasons:
        assert f"| `{reason}` |" in doc, reason


def test_the_example_policy_is_valid(doc: str) -> None:
    block = re.search(r"```yaml\n(apiVersion: .*?)```", doc, re.DOTALL)
    assert block is not None
    policy = yaml.safe_load(block.group(1))
    PolicySpec.model_validate(policy["spec"])
    result = policy_checks.check_policy("trm-sre", policy["metadata"]["name"], 1, policy["spec"], default_catalog())
    assert result.problems == () and result.policy is not None


def test_paths_named_in_the_reference_exist(doc: str) -> None:
    for path in set(re.findall(r"`((?:deploy|docs|crds|controller)/[\w./-]+?)/?`", doc)):
        assert (REPO / path).exists(), f"policy-reference.md names {path}, which does not exist"


def test_a_new_schema_field_changes_the_output(crd: dict[str, Any]) -> None:
    mutated = copy.deepcopy(crd)
    actions = _root(mutated)["properties"]["spec"]["properties"]["actions"]
    actions["properties"]["quietHours"] = {
        "type": "string",
        "description": "Hours when nothing is triggered, e.g. 22-06.",
        "maxLength": 5,
        "pattern": "^[0-9]{2}-[0-9]{2}$",
        "default": "00-00",
    }
    actions.setdefault("required", []).append("quietHours")
    before, after = render(crd), render(mutated)
    assert before != after
    row = doc_row(after, "spec.actions.quietHours")
    assert "Hours when nothing is triggered" in row and "| yes |" in row and '`"00-00"`' in row
    assert "at most 5 chars" in row and "`^[0-9]{2}-[0-9]{2}$`" in row
    # The committed file no longer matches, so the staleness test would fail.
    assert DOC_PATH.read_text(encoding="utf-8") != after


def test_a_changed_description_or_bound_changes_the_output(crd: dict[str, Any]) -> None:
    mutated = copy.deepcopy(crd)
    trm = _root(mutated)["properties"]["spec"]["properties"]["chain"]["items"]["properties"]["trm"]
    trm["properties"]["maxSteps"]["maximum"] = 64
    trm["properties"]["timeoutMs"]["description"] = "A different sentence."
    after = render(mutated)
    assert "1..64" in doc_row(after, "spec.chain[].trm.maxSteps")
    assert "A different sentence." in doc_row(after, "spec.chain[].trm.timeoutMs")
    assert after != render(crd)
