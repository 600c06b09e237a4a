"""deploy/overlays/gpu (issue #14): the CUDA image, strict --device cuda, what a GPU pod needs to schedule and start.

Built with kubectl's kustomize (the envtest kubectl, built by `make envtest`), then read as the API server would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.helpers import REPO, kustomize_build, one

OVERLAY = REPO / "deploy" / "overlays" / "gpu"
KUBECTL = sorted(Path.home().glob(".cache/trm-sre/bin/kube-v*/kubectl"))


@pytest.mark.envtest
def test_the_gpu_overlay_asks_for_a_gpu_strictly_and_waits_for_cuda() -> None:
    if not KUBECTL:
        pytest.fail("no kubectl in ~/.cache/trm-sre/bin: run `make envtest`")
    deployment = one(kustomize_build(KUBECTL[-1], OVERLAY), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (ctr,) = [c for c in pod["containers"] if c["name"] == "controller"]
    assert ctr["args"][-2:] == ["--device", "cuda"]  # strict: no silent CPU fall back
    assert ctr["image"].endswith("-cuda")  # the CUDA variant (onnxruntime-gpu)
    assert pod["runtimeClassName"] == "nvidia"
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu"}
    probe = ctr["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 300  # CUDA start-up on a cold node
    assert probe["httpGet"]["port"] == "liveness"
