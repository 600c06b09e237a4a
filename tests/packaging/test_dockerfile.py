"""The Dockerfile and .dockerignore keep the image's contract (docs/operations.md).

No Docker daemon runs here, so the image is not built by these tests: they
read the Dockerfile's instructions and check what can be checked without
building (base image, user, entrypoint, pip flags, what is copied and that the
build context still contains it). deploy/kind/e2e.sh builds and runs the
image on machines with Docker.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.helpers import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to; -1 before the first FROM


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comment lines dropped."""
    out: list[Instruction] = []
    stage = -1
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction is removed by the parser
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(keyword.upper(), args.strip(), stage))
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    return out


@pytest.fixture(scope="module")
def parsed() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage(parsed: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in parsed)
    return [i for i in parsed if i.stage == last]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for inst in stage:
        if inst.keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", inst.args)))
    return env


def test_builds_from_python_311_slim_in_two_stages(parsed: list[Instruction]) -> None:
    args = {
        m[0]: m[1] for i in parsed if i.keyword == "ARG" and i.stage == -1 for m in re.findall(r"(\w+)=(\S+)", i.args)
    }
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    froms = [i.args for i in parsed if i.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_variant_defaults_to_cpu_and_no_variant_installs_torch(parsed: list[Instruction]) -> None:
    """Issue #14: serving runs onnxruntime; torch (the train extra) is in neither image."""
    build = [i for i in parsed if i.stage == 0]
    arg_defaults = dict(m for i in build if i.keyword == "ARG" for m in re.findall(r"(\w+)=(\S+)", i.args))
    assert arg_defaults["VARIANT"] == "cpu"
    runs = " ".join(i.args for i in build if i.keyword == "RUN")
    for command in re.findall(r"pip install[^;&|]*", runs):
        assert "torch" not in command and "[train]" not in command, command
    assert "-c requirements.lock ." in runs and "-c requirements.lock .[" not in runs  # no extras
    # the build refuses an image with torch in it, and loads the checkpoint with the ONNX runtime
    assert 'find_spec("torch")' in runs
    assert 'runtime="onnx"' in runs and '"torch" not in sys.modules' in runs
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not any(d.startswith("torch") for d in project["dependencies"])
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["train"])
    assert any(d.startswith("onnxruntime") for d in project["dependencies"])


def test_cuda_variant_swaps_in_onnxruntime_gpu_at_the_locked_version(parsed: list[Instruction]) -> None:
    build = [i for i in parsed if i.stage == 0]
    runs = " ".join(i.args for i in build if i.keyword == "RUN")
    assert '[ "$VARIANT" = cuda ]' in runs
    assert "grep -E '^onnxruntime==' requirements.lock" in runs
    assert "pip uninstall -y onnxruntime" in runs
    assert 'pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]==$ort"' in runs
    assert runs.index("pip uninstall -y onnxruntime") < runs.index("onnxruntime-gpu") < runs.index("pip check")
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    assert re.search(r"^onnxruntime==\S+$", lock, re.MULTILINE), "requirements.lock pins no onnxruntime version"
    assert 'echo "VARIANT must be cpu or cuda' in runs


def test_pip_installs_from_the_lock_without_a_cache(parsed: list[Instruction]) -> None:
    pip_runs = [i.args for i in parsed if i.keyword == "RUN" and "pip install" in i.args]
    assert pip_runs
    for run in pip_runs:
        for command in re.findall(r"pip install[^;&|]*", run):
            assert "--no-cache-dir" in command, command
    assert any("-c requirements.lock ." in run for run in pip_runs), (
        "the project must be installed under the lock's constraints"
    )


def test_runtime_is_non_root_and_read_only_root_friendly(parsed: list[Instruction]) -> None:
    runtime = final_stage(parsed)
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users == ["65532:65532"]
    env = env_of(runtime)
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
    assert env["XDG_CACHE_HOME"].startswith("/tmp/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/trm-sre/bin:")
    runs = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "--uid 65532" in runs and "/var/lib/trm-sre" in runs


def test_default_state_dir_is_var_lib_trm_sre(parsed: list[Instruction], monkeypatch: pytest.MonkeyPatch) -> None:
    """CMD passes no --state-dir: the image's XDG_DATA_HOME must make the default /var/lib/trm-sre."""
    from controller.settings import default_state_dir

    monkeypatch.setenv("XDG_DATA_HOME", env_of(final_stage(parsed))["XDG_DATA_HOME"])
    assert default_state_dir() == Path("/var/lib/trm-sre")


def test_entrypoint_and_cmd(parsed: list[Instruction]) -> None:
    runtime = final_stage(parsed)
    entrypoint = [json.loads(i.args) for i in runtime if i.keyword == "ENTRYPOINT"]
    cmd = [json.loads(i.args) for i in runtime if i.keyword == "CMD"]
    assert entrypoint == [["trm-sre"]]
    assert cmd == [["run", "--host", "0.0.0.0"]]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["trm-sre"] == "controller.tools.cli:main"


def test_the_checkpoint_and_runbooks_go_into_the_image(parsed: list[Instruction]) -> None:
    build = [i for i in parsed if i.stage == 0]
    copied = {src.rstrip("/") for i in build if i.keyword == "COPY" for src in i.args.split()[:-1]}
    assert {"controller", "runbooks", "models", "pyproject.toml", "README.md", "requirements.lock"} <= copied
    runs = " ".join(i.args for i in build if i.keyword == "RUN")
    assert "cp -a models/checkpoints/." in runs
    assert "TRMSelector.load(" in runs  # the build fails on a missing or stale checkpoint
    assert [i.args for i in final_stage(parsed) if i.keyword == "COPY"] == ["--from=build /opt/trm-sre /opt/trm-sre"]


# --------------------------------------------------------------------------
# .dockerignore
# --------------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, str]]:
    """(negated, pattern) in file order."""
    out = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((line.startswith("!"), line.lstrip("!").strip("/")))
    return out


def _matches(pattern: str, path: str) -> bool:
    """Go's filepath.Match plus `**` (any number of directories), as Docker applies it."""
    regex = (
        re.escape(pattern)
        .replace(r"\*\*/", "(?:.*/)?")
        .replace(r"\*\*", ".*")
        .replace(r"\*", "[^/]*")
        .replace(r"\?", "[^/]")
    )
    return re.fullmatch(regex, path) is not None


def is_ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, pattern in ignore_patterns():
        if any(_matches(pattern, prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_what_the_build_copies() -> None:
    needed = [
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "controller/tools/cli.py",
        "controller/defaults/default-policy.yaml",
        "runbooks/catalog.py",
        "runbooks/pod-restart.yaml",
        "models/selector.py",
        "models/checkpoints/trm/model.safetensors",
        "models/checkpoints/trm/model.onnx",
    ]
    assert [p for p in needed if is_ignored(p)] == []


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "controller/__pycache__/x.pyc",
        "state/trm-sre.sqlite",
        "models/datasets/train.jsonl",
        "models/checkpoints/plain/config.json",
    ):
        assert is_ignored(path), path
