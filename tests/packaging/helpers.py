"""Helpers of the packaging tests: building helm and the PromQL checker (from
source through the Go module proxy, cached like the envtest binaries in
$TRM_SRE_CACHE/bin, default ~/.cache/trm-sre/bin), rendering the chart and the
kustomize trees. Fixtures are in conftest.py; import this module as
`tests.packaging.helpers`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "trm-sre"
BASE = REPO / "deploy" / "base"
BUILD_HELM = REPO / "tests" / "envtest" / "build-helm.sh"
PROMQL_MODULE = Path(__file__).resolve().parent / "promql"

# A cold helm build downloads and compiles a few hundred modules: 5-8 minutes on two cores.
BUILD_TIMEOUT = 1500


class BuildError(RuntimeError):
    """A test binary could not be built (no Go, no module proxy, a compile error)."""


def cache_dir() -> Path:
    return Path(os.environ.get("TRM_SRE_CACHE", Path.home() / ".cache" / "trm-sre"))


def go_env() -> dict[str, str]:
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=mod")
    if shutil.which("go", path=env.get("PATH")) is None and Path("/usr/local/go/bin/go").exists():
        env["PATH"] = f"/usr/local/go/bin:{env.get('PATH', '')}"
    return env


def build_helm() -> Path:
    """The helm binary; tests/envtest/build-helm.sh builds it once and prints its directory."""
    proc = subprocess.run(
        ["bash", str(BUILD_HELM)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=go_env(), check=False
    )
    if proc.returncode != 0:
        raise BuildError(f"build-helm.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    helm = Path(proc.stdout.strip().splitlines()[-1]) / "helm"
    if not os.access(helm, os.X_OK):
        raise BuildError(f"build-helm.sh printed {helm.parent}, which has no helm binary")
    return helm


def build_promql_check() -> Path:
    """tests/packaging/promql built once per content of its sources (the cache key)."""
    sources = sorted(p for p in PROMQL_MODULE.iterdir() if p.name in ("go.mod", "go.sum") or p.suffix == ".go")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    binary = cache_dir() / "bin" / f"promql-check-{digest}" / "promql-check"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name("promql-check.tmp")
    proc = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), "."],
        cwd=PROMQL_MODULE,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=go_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"building tests/packaging/promql failed:\n{proc.stderr[-4000:]}")
    tmp.rename(binary)
    return binary


def promql_check(binary: Path, exprs: Iterable[str]) -> list[dict[str, Any]]:
    """Parse each expression with Prometheus' parser: one {expr, error, metrics} per expression."""
    proc = subprocess.run(
        [str(binary)], input=json.dumps(list(exprs)), capture_output=True, text=True, timeout=60, check=True
    )
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def helm(helm_bin: Path, *args: str, timeout: float = 120) -> str:
    """Run helm (no cluster needed for lint/template); stdout, or AssertionError with its output."""
    proc = subprocess.run([str(helm_bin), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def render_chart(
    helm_bin: Path, *set_args: str, release: str = "trm-sre", namespace: str = "trm-sre"
) -> list[dict[str, Any]]:
    """`helm template` the chart with `--set` values; CRDs are not included (helm's default)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for value in set_args:
        args += ["--set", value]
    return load_all(helm(helm_bin, *args))


def kustomize_build(kubectl_bin: Path, directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`: kubectl's built-in kustomize, offline."""
    proc = subprocess.run(
        [str(kubectl_bin), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
    return load_all(proc.stdout)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads a bare `=` as the string it is in YAML 1.2 (kustomize writes
    the CRD's `default: "="` unquoted; YAML 1.1 loaders take it for the obsolete value tag)."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]


def dump_all(docs: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Iterable[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The single object of `kind` whose name ends with `name_suffix`."""
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {[d['metadata']['name'] for d in found]}"
    return found[0]
