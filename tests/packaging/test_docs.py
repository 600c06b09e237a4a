"""The operations and runbook-authoring guides stay true: their YAML examples
load into the same models the controller uses, and the files and commands
they name exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from controller.schemas.policy import PolicySpec
from runbooks import default_catalog
from runbooks.catalog import Catalog, Runbook
from tests.packaging.helpers import REPO

OPERATIONS = REPO / "docs" / "operations.md"
AUTHORING = REPO / "docs" / "runbook-authoring.md"


def yaml_blocks(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"^ *```yaml\n(.*?)^ *```", text, re.MULTILINE | re.DOTALL)]


def test_authoring_example_runbook_is_valid_and_its_example_validates() -> None:
    runbook = Runbook.model_validate(yaml_blocks(AUTHORING)[0])
    assert runbook.name not in default_catalog(), "the example must be a new function"
    for example in runbook.examples:
        assert runbook.validate_parameters(example.parameters) == example.parameters
    # It would fit into the catalog next to the shipped runbooks.
    Catalog(functions=(*default_catalog().functions, runbook))


def test_authoring_example_policy_is_a_valid_spec_for_the_example_function() -> None:
    blocks = yaml_blocks(AUTHORING)
    runbook, policy = blocks[0], blocks[1]
    assert policy["kind"] == "RemediationPolicy"
    spec = PolicySpec.model_validate(policy["spec"])
    assert spec.allowed_functions == (runbook["name"],)
    assert spec.actions.dry_run is True


def test_operations_alertmanager_example_matches_the_shipped_receiver() -> None:
    example = yaml_blocks(OPERATIONS)[0]
    shipped = yaml.safe_load((REPO / "deploy" / "alertmanager" / "receiver.yaml").read_text(encoding="utf-8"))
    ours, theirs = example["receivers"][0]["webhook_configs"][0], shipped["receivers"][0]["webhook_configs"][0]
    for key in ("url", "send_resolved", "max_alerts", "http_config"):
        assert ours[key] == theirs[key], key


def test_paths_named_in_the_guides_exist() -> None:
    for guide in (OPERATIONS, AUTHORING):
        text = guide.read_text(encoding="utf-8")
        for path in set(re.findall(r"`((?:deploy|docs|runbooks|models|controller|tests|crds)/[\w./-]+?)/?`", text)):
            if "statefulset-restart" in path or path.startswith("models/checkpoints"):
                continue  # the example's own new file; make train's output (tests/trm checks it)
            assert (REPO / path).exists(), f"{guide.name} names {path}, which does not exist"


def test_operations_lists_every_environment_variable_the_settings_read() -> None:
    from controller.settings import environment_variables
    from controller.tools import settings_reference

    text = settings_reference.DOC_PATH.read_text()
    assert settings_reference.rewrite(text) == text, "docs/operations.md settings table is stale: run `make docs`"
    for name, _ in environment_variables():
        assert f"`{name}`" in text, name


def test_every_module_the_architecture_doc_names_exists() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:controller|models|runbooks)(?:/[\w.-]+)+)`", text))
    named |= set(re.findall(r"^\s*((?:controller|models|runbooks)/[\w/.-]+)", text, flags=re.MULTILINE))
    assert len(named) >= 20, "the architecture map names the modules"
    missing = sorted(path for path in named if not (REPO / path.rstrip("/")).exists())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
