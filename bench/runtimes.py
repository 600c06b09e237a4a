"""Section "runtimes" (issue #14): the TRM on ONNX Runtime and on torch, side by side. Ratios, no verdicts.

For each runtime (`--runtime onnx`, the default, and `--runtime torch`), in fresh processes:
- the TRM alone: p50 / p99 of `TRMSelector.select` at batch 1 on one thread over held-out alerts (encoding,
  the halting loop, decoding and catalog validation included), the load time, the RSS after load, and
  whether torch was imported;
- the controller: process start -> first /readyz 200, its RSS when it is ready (idle), and its RSS after
  60 s at 100 alerts/s (open-loop `bench.loadgen`, the default embedded policy; 20 s in quick mode, none in
  --smoke);
- the serving install (`pip install .`, no extras) in a fresh virtualenv: MB on disk and whether torch is in
  it (needs uv; skipped with the reason otherwise).
The issue's targets are printed beside the numbers (TRM p50 <= 5 ms, p99 <= 10 ms; readiness <= 2 s;
install <= 400 MB, no torch) and nothing asserts them.

    python -m bench.runtimes [--n 500] [--repeats 3]        # or: python -m bench --sections runtimes
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.coldstart import _free_port
from bench.env import ProcessSampler, rss_mb
from bench.modes import MODES, Mode, Options
from bench.procs import REPO, child_env, controller_argv, http_get, spawn, stop
from bench.stats import ratio, summarize

RUNTIMES = ("onnx", "torch")
TARGETS = {"trm_p50_ms": 5.0, "trm_p99_ms": 10.0, "readiness_s": 2.0, "serving_install_mb": 400.0}
HELD_OUT = REPO / "models" / "datasets" / "test-heldout-names.jsonl"

_CHILD = r"""
import json, sys, time
runtime, checkpoint, n = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
before = rss()
t0 = time.perf_counter()
from models.selector import TRMSelector
sel = TRMSelector.load(checkpoint, runtime=runtime, threads=1)
load_s = time.perf_counter() - t0
alerts = [json.loads(l)["alert"] for l in open(sys.argv[4]) if l.strip()][:n]
for a in alerts[:20]:
    sel.select(a)
lat = []
for a in alerts:
    s = time.perf_counter(); sel.select(a); lat.append((time.perf_counter() - s) * 1000)
print(json.dumps({"latency_ms": lat, "load_s": load_s, "rss_mb_before": before, "rss_mb_loaded": rss(),
                  "torch_imported": "torch" in sys.modules, "device": str(sel.device)}))
"""


def trm_alone(runtime: str, checkpoint: str | None, n: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, runtime, checkpoint or "", str(n), str(HELD_OUT)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    got = json.loads(done.stdout.strip().splitlines()[-1])
    stats = summarize(got.pop("latency_ms"))
    return {"latency_ms": stats} | {k: (round(v, 3) if isinstance(v, float) else v) for k, v in got.items()}


def controller_ready(runtime: str, workdir: Path, checkpoint: str | None, i: int) -> tuple[float, float | None]:
    """(seconds to the first /readyz 200, RSS MiB then) for one controller start with `--runtime`."""
    port = _free_port()
    extra = ["--runtime", runtime] + (["--checkpoint", checkpoint] if checkpoint else [])
    argv = controller_argv(workdir / f"state-{runtime}-{i}", policies=None, model=True, port=port, extra=extra)
    t0 = time.monotonic()
    popen = spawn([sys.executable, "-m", "controller", *argv], child_env(), workdir / f"controller-{runtime}.log")
    try:
        while time.monotonic() - t0 < 120:
            try:
                status, _ = http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if status == 200:
                    ready = time.monotonic() - t0
                    time.sleep(1.0)  # let start-up garbage settle before reading the idle RSS
                    return ready, rss_mb(popen.pid)
            except OSError:
                pass
            if popen.poll() is not None:
                raise RuntimeError(f"the controller ({runtime}) exited with {popen.returncode} before it was ready")
            time.sleep(0.02)
        raise RuntimeError(f"the controller ({runtime}) was not ready within 120 s")
    finally:
        stop(popen, 30)


def controller_under_load(runtime: str, workdir: Path, checkpoint: str | None, seconds: float, rate: float) -> dict:
    """RSS and CPU of a controller (`--runtime`) while `rate` alerts/s arrive for `seconds` (open loop)."""
    port = _free_port()
    token = "bench-runtimes"
    extra = ["--runtime", runtime] + (["--checkpoint", checkpoint] if checkpoint else [])
    argv = controller_argv(workdir / f"state-load-{runtime}", policies=None, model=True, port=port, extra=extra)
    env = child_env() | {"TRM_SRE_WEBHOOK_TOKEN": token}
    popen = spawn([sys.executable, "-m", "controller", *argv], env, workdir / f"controller-load-{runtime}.log")
    try:
        t0 = time.monotonic()
        while True:
            try:
                if http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if popen.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(f"the controller ({runtime}) did not become ready")
            time.sleep(0.05)
        out = workdir / f"loadgen-{runtime}.json"
        with ProcessSampler(popen.pid) as sampler:
            sent = subprocess.run(
                [
                    sys.executable, "-m", "bench.loadgen", "--url", f"http://127.0.0.1:{port}/alertmanager",
                    "--rate", str(rate), "--duration", str(seconds), "--run", f"rt-{runtime}-{int(t0)}",
                    "--phase", f"load-{runtime}", "--token", token, "--out", str(out),
                ],
                cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=seconds + 180, check=False,
            )  # fmt: skip
        codes = (
            json.loads(sent.stdout.strip().splitlines()[-1])["codes"] if sent.returncode == 0 else sent.stderr[-500:]
        )
        out.unlink(missing_ok=True)
        return {"rate": rate, "seconds": seconds, "codes": codes, "rss_mb_after": rss_mb(popen.pid)} | sampler.result
    finally:
        stop(popen, 30)


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, check=False, timeout=30).returncode == 0
    except OSError:
        return False


def serving_install(workdir: Path) -> dict[str, Any]:
    """`pip install .` (no extras, under the lock) into a fresh venv: MB on disk, and no torch in it."""
    candidates = [[shutil.which("uv") or "uv"], [sys.executable, "-m", "uv"], ["python3", "-m", "uv"]]
    base = next((c for c in candidates if _works([*c, "--version"])), None)
    if base is None:
        return {"skipped": "uv is not available (pip install uv) to build a fresh virtualenv quickly"}
    venv = workdir / "serving-venv"
    shutil.rmtree(venv, ignore_errors=True)
    env = child_env() | {"UV_PYTHON_DOWNLOADS": "never"}

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)

    made = run([*base, "venv", "-q", "--python", sys.executable, str(venv)])
    if made.returncode != 0:
        return {"error": made.stderr[-1000:]}
    python = venv / "bin" / "python"
    installed = run([*base, "pip", "install", "-q", "--python", str(python), "-c", "requirements.lock", "."])
    if installed.returncode != 0:
        return {"error": installed.stderr[-1000:]}
    size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
    torch = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is not None)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    shutil.rmtree(venv, ignore_errors=True)
    return {"mb": round(size, 1), "torch_installed": torch == "True", "target_mb": TARGETS["serving_install_mb"]}


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    options = options or Options()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bench-runtimes-"))
    workdir.mkdir(parents=True, exist_ok=True)
    n = 1000 if mode.name == "full" else 300
    repeats = max(1, mode.coldstart_repeats)
    load_seconds = mode.runtimes_load_s  # the "RSS after 60 s at 100 alerts/s" (quick mode: shorter)
    out: dict[str, Any] = {
        "alerts": n,
        "repeats": repeats,
        "load_seconds": load_seconds,
        "targets": TARGETS,
        "runtimes": {},
    }
    for runtime in RUNTIMES:
        entry: dict[str, Any] = {"trm": trm_alone(runtime, options.checkpoint, n)}
        readies, rss = [], []
        for i in range(repeats):
            ready, mb = controller_ready(runtime, workdir, options.checkpoint, i)
            readies.append(ready * 1000)
            if mb is not None:
                rss.append(mb)
        entry["controller"] = {"ready_ms": summarize(readies), "rss_mb_idle": summarize(rss) if rss else None}
        if load_seconds > 0:
            try:
                entry["controller"]["under_load"] = controller_under_load(
                    runtime, workdir, options.checkpoint, load_seconds, 100.0
                )
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
                entry["controller"]["under_load"] = {"error": f"{type(exc).__name__}: {exc}"}
        out["runtimes"][runtime] = entry
    onnx, torch = out["runtimes"]["onnx"], out["runtimes"]["torch"]
    try:
        out["ratio_onnx_to_torch"] = {
            "trm_p50": ratio(onnx["trm"]["latency_ms"]["p50"], torch["trm"]["latency_ms"]["p50"]),
            "trm_p99": ratio(onnx["trm"]["latency_ms"]["p99"], torch["trm"]["latency_ms"]["p99"]),
            "trm_rss_loaded": ratio(onnx["trm"]["rss_mb_loaded"], torch["trm"]["rss_mb_loaded"]),
            "controller_ready_p50": ratio(
                onnx["controller"]["ready_ms"]["p50"], torch["controller"]["ready_ms"]["p50"]
            ),
            "controller_rss_idle_p50": ratio(
                onnx["controller"]["rss_mb_idle"]["p50"], torch["controller"]["rss_mb_idle"]["p50"]
            ),
            "controller_rss_after_load": ratio(
                (onnx["controller"].get("under_load") or {}).get("rss_mb_after"),
                (torch["controller"].get("under_load") or {}).get("rss_mb_after"),
            ),
        }
    except (KeyError, TypeError):
        out["ratio_onnx_to_torch"] = None  # one side failed: its entry says why
    out["serving_install"] = serving_install(workdir)
    return out


def render(result: dict[str, Any]) -> list[str]:
    """Markdown lines for BENCHMARKS.md."""
    lines = [
        "## TRM runtimes: ONNX Runtime vs torch (issue #14)",
        "",
        (
            f"Batch 1, one thread, {result.get('alerts')} held-out alerts; controller start -> /readyz 200 "
            f"({result.get('repeats')} starts each), RSS when ready. Targets: TRM p50 <= 5 ms, p99 <= 10 ms, "
            "readiness <= 2 s, serving install <= 400 MB without torch."
        ),
        "",
        "| runtime | TRM p50 ms | TRM p99 ms | load s | RSS loaded MB | torch imported | ready p50 ms | RSS idle MB"
        + f" | RSS after {result.get('load_seconds', 60):g} s at 100/s MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in result.get("runtimes", {}).items():
        trm, ctl = entry.get("trm", {}), entry.get("controller", {})
        lat = trm.get("latency_ms", {})
        rss_idle = (ctl.get("rss_mb_idle") or {}).get("p50")
        lines.append(
            f"| {name} | {lat.get('p50')} | {lat.get('p99')} | {trm.get('load_s')} | {trm.get('rss_mb_loaded')} | "
            f"{trm.get('torch_imported')} | {(ctl.get('ready_ms') or {}).get('p50')} | {rss_idle} | "
            f"{(ctl.get('under_load') or {}).get('rss_mb_after')} |"
        )
    lines += ["", f"ONNX / torch: `{json.dumps(result.get('ratio_onnx_to_torch'))}`"]
    lines += [f"Serving install (`pip install .`, no extras): `{json.dumps(result.get('serving_install'))}`", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runtimes", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick", help="smoke skips the 60 s load phase")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(MODES[args.mode], None, Options(checkpoint=args.checkpoint))
    text = json.dumps(result, indent=1, default=str)
    if args.json:
        args.json.write_text(text)
    print(text)
    print("\n".join(render(result)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
