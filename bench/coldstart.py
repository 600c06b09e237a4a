"""Section 4, cold start: process start → /readyz 200, and operator start → policies indexed.

/readyz is polled every 20 ms from the moment the process is spawned, on a
port chosen beforehand (so nothing waits for the announce line). Baselines
in the same run: a bare interpreter (`python -c pass`) and `import torch`
alone, which together say how much of the start is Python and torch rather
than trm-sre.

The operator part runs in a child process (`python -m bench.coldstart
operator`) against a real kube-apiserver + etcd from tests/envtest (only if
their binaries are already built: `make envtest`), with `n` policies created
before the operator starts. It reports operator start → first policy in the
index, → all `n` indexed, and a policy created while it runs → indexed; and
the whole controller in cluster mode, process start → /readyz 200.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.modes import Mode, Options
from bench.procs import REPO, child_env, controller_argv, http_get, spawn, stop
from bench.stats import ratio, summarize

CRD_FILE = REPO / "crds" / "remediationpolicy.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_ready(argv: list[str], env: dict[str, str], port: int, log: Path, timeout: float = 120.0) -> float:
    """Seconds from spawning `python -m controller <argv>` to its first /readyz 200."""
    t0 = time.monotonic()
    popen = spawn([sys.executable, "-m", "controller", *argv], env, log)
    try:
        while time.monotonic() - t0 < timeout:
            try:
                status, _ = http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            if popen.poll() is not None:
                raise RuntimeError(f"the controller exited with {popen.returncode} before it was ready (log: {log})")
            time.sleep(0.02)
        raise RuntimeError(f"not ready within {timeout:.0f} s (log: {log})")
    finally:
        stop(popen, 30)


def time_command(argv: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, cwd=REPO, env=child_env(), check=True, capture_output=True, timeout=300)
    return time.monotonic() - t0


def readyz(mode: Mode, workdir: Path, options: Options) -> dict[str, Any]:
    extra = ["--checkpoint", options.checkpoint] if options.checkpoint else []
    variants: dict[str, list[float]] = {
        "python -c pass": [],
        "python -c 'import torch'": [],
        "controller --no-model": [],
        "controller with the TRM": [],
    }
    for i in range(mode.coldstart_repeats):
        variants["python -c pass"].append(time_command([sys.executable, "-c", "pass"]))
        variants["python -c 'import torch'"].append(time_command([sys.executable, "-c", "import torch"]))
        for name, model in (("controller --no-model", False), ("controller with the TRM", True)):
            port = _free_port()
            argv = controller_argv(
                workdir / f"state-{name.split()[-1]}-{i}",
                policies=None,
                model=model,
                port=port,
                extra=extra if model else None,
            )
            variants[name].append(time_to_ready(argv, child_env(), port, workdir / "coldstart.log"))
    out = {name: summarize([v * 1000 for v in values]) for name, values in variants.items()}
    base = out["python -c pass"]["p50"]
    return {
        "repeats": mode.coldstart_repeats,
        "ms": out,
        "ratio_p50_to_bare_interpreter": {name: ratio(s["p50"], base) for name, s in out.items()},
    }


# --------------------------------------------------------------------------
# Operator cold start (child process: KUBECONFIG must be set before kopf/kubernetes are imported)
# --------------------------------------------------------------------------


def _binaries_built() -> str | None:
    """None if the test control plane's binaries are in the cache (or KUBEBUILDER_ASSETS), else why not."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / "kube-apiserver").is_file():
        return None
    from tests.envtest.controlplane import cache_dir, versions

    v = versions()
    target = cache_dir() / "bin" / f"assets-{v['K8S_VERSION']}-{v['ETCD_VERSION']}"
    if (target / "kube-apiserver").is_file() and (target / "etcd").is_file():
        return None
    return f"kube-apiserver/etcd not built ({target} missing): run `make envtest` first"


def _policy_yaml(name: str) -> str:
    return (
        "apiVersion: remediation.homelab.io/v1alpha1\nkind: RemediationPolicy\n"
        f"metadata: {{name: {name}, namespace: bench}}\n"
        "spec:\n"
        f"  match: {{alertNames: [Alert-{name}]}}\n"
        "  allowedFunctions: [pod-restart]\n"
        "  chain:\n"
        "    - rules:\n"
        "        - function: pod-restart\n"
        '          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}\n'
    )


def operator_child(n_policies: int, checkpoint: str | None) -> dict[str, Any]:
    from tests.envtest.controlplane import start_control_plane

    t_cp = time.monotonic()
    cp = start_control_plane()
    result: dict[str, Any] = {"control_plane_start_s": round(time.monotonic() - t_cp, 1), "policies": n_policies}
    try:
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)  # read by the kubernetes client when kopf logs in
        cp.kubectl("apply", "-f", str(CRD_FILE))
        cp.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/remediationpolicies.remediation.homelab.io"
        )
        cp.kubectl("create", "namespace", "bench")
        docs = "---\n".join(_policy_yaml(f"p{i}") for i in range(n_policies))
        cp.kubectl("apply", "-f", "-", input=docs, timeout=300)

        from controller.decision.policy_index import PolicyIndex
        from controller.engine.policy_stats import PolicyStatusRecorder
        from controller.operator.handlers import build_registry, run_operator
        from runbooks import default_catalog

        index, recorder = PolicyIndex(), PolicyStatusRecorder()
        registry = build_registry(index, recorder, default_catalog())
        stop_flag, ready_flag = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            import asyncio

            try:
                asyncio.run(run_operator(registry, namespaces=None, stop_flag=stop_flag, ready_flag=ready_flag))  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - reported in the result
                errors.append(exc)

        t0 = time.monotonic()
        thread = threading.Thread(target=main, name="kopf", daemon=True)
        thread.start()
        first = ready = everything = None
        while time.monotonic() - t0 < 120 and everything is None and not errors:
            now = time.monotonic() - t0
            if ready is None and ready_flag.is_set():
                ready = now
            if first is None and len(index) >= 1:
                first = now
            if len(index) >= n_policies:
                everything = now
            time.sleep(0.005)
        result["operator_start_to_ready_flag_ms"] = round(ready * 1000, 1) if ready is not None else None
        result["operator_start_to_first_policy_ms"] = round(first * 1000, 1) if first is not None else None
        result["operator_start_to_all_policies_ms"] = round(everything * 1000, 1) if everything is not None else None
        # A policy created while the operator runs: from starting `kubectl apply` to the index holding it
        # (kubectl's own start-up included; its run time alone is reported beside it).
        watch, kubectl_runs = [], []
        for i in range(3):
            name = f"late{i}"
            indexed_at: list[float] = []

            def poll(name: str = name, out: list[float] = indexed_at) -> None:
                deadline = time.monotonic() + 30
                while index.get(f"bench/{name}") is None and time.monotonic() < deadline:
                    time.sleep(0.001)
                out.append(time.monotonic())

            poller = threading.Thread(target=poll, daemon=True)
            t_apply = time.monotonic()
            poller.start()
            cp.kubectl("apply", "-f", "-", input=_policy_yaml(name))
            kubectl_runs.append((time.monotonic() - t_apply) * 1000)
            poller.join(35)
            watch.append((indexed_at[0] - t_apply) * 1000)
        result["created_to_indexed_ms"] = summarize(watch)
        result["kubectl_apply_ms"] = summarize(kubectl_runs)
        stop_flag.set()
        thread.join(30)
        if errors:
            result["operator_error"] = repr(errors[0])

        # The whole controller in cluster mode: process start → /readyz 200 (the operator has listed policies).
        port = _free_port()
        workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-op-"))
        argv = controller_argv(
            workdir / "state",
            policies=None,
            model=True,
            port=port,
            standalone=False,
            extra=["--liveness-port", "0", *(["--checkpoint", checkpoint] if checkpoint else [])],
        )
        env = child_env(KUBECONFIG=str(cp.kubeconfig))
        result["cluster_mode_process_start_to_readyz_ms"] = round(
            time_to_ready(argv, env, port, workdir / "controller.log") * 1000, 1
        )
    finally:
        cp.stop()
    return result


def operator(mode: Mode, workdir: Path, options: Options) -> dict[str, Any]:
    missing = _binaries_built()
    if missing:
        return {"unavailable": missing}
    out = workdir / "operator.json"
    argv = [
        sys.executable,
        "-m",
        "bench.coldstart",
        "operator",
        "--policies",
        str(mode.operator_policies),
        "--out",
        str(out),
    ]
    if options.checkpoint:
        argv += ["--checkpoint", options.checkpoint]
    with open(workdir / "operator.log", "a") as log:
        done = subprocess.run(argv, cwd=REPO, env=child_env(), stdout=log, stderr=log, timeout=900, check=False)
    if done.returncode != 0 or not out.exists():
        return {
            "error": f"the operator cold-start child failed (exit {done.returncode}); see {workdir / 'operator.log'}"
        }
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    options = options or Options()
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-cold-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    result = {"readyz": readyz(mode, workdir, options)}
    result["operator"] = (
        operator(mode, workdir, options) if mode.operator_coldstart else {"skipped": f"not in {mode.name} mode"}
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart")
    parser.add_argument("what", choices=["operator"])
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(operator_child(args.policies, args.checkpoint)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
