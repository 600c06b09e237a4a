"""The embedded default RemediationPolicy (``default-policy.yaml``) and the manifest → `Policy` reader.

The default policy is shipped inside the package so the controller has a sane,
reviewable behaviour before anyone writes a policy, and so ``trm-sre eval
--selector rules|chain`` measures exactly what runs. The file is a complete
RemediationPolicy manifest: ``kubectl apply -f`` it to make it visible and editable
in the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controller.schemas.crd import API_VERSION, KIND
from controller.schemas.policy import Policy, PolicySpec

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent / "default-policy.yaml"


def policy_from_manifest(manifest: Any) -> Policy:
    """A RemediationPolicy manifest (as parsed YAML/JSON) → `Policy`; ValueError naming what is wrong."""
    if not isinstance(manifest, dict):
        raise ValueError("a RemediationPolicy manifest must be a mapping")
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        raise ValueError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got {manifest.get('apiVersion')} {manifest.get('kind')}"
        )
    metadata = manifest.get("metadata") or {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not name or not namespace:
        raise ValueError("metadata.name and metadata.namespace are required")
    return Policy(
        namespace=namespace,
        name=name,
        generation=int(metadata.get("generation") or 0),
        spec=PolicySpec.model_validate(manifest.get("spec") or {}),
    )


def load_default_policy(path: Path = DEFAULT_POLICY_PATH) -> Policy:
    """The embedded default policy (read and validated on each call; callers keep the result)."""
    return policy_from_manifest(yaml.safe_load(path.read_text()))
