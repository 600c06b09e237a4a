"""Section 5, profile: where the time goes in the end-to-end path at 100 alerts/s.

The controller runs as in section 2, but its CLI is wrapped in pyinstrument
(`python -m bench.profile --out-dir D -- run ...`), which samples the main
thread every millisecond: the event loop, where HTTP parsing, routing,
validation, the pipeline's coroutines, logging and the sink client run.
Work handed to threads (SQLite commits, the model) shows there only as the
loop waiting; the /proc sampler splits CPU between the main thread and the
others to cover it.

Samples are grouped by component: walking each sample's stack from the leaf
up, the first frame that belongs to a known component names it (so `json`
called by the log formatter counts as logging, and pydantic called by our
code counts as pydantic).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.alerts import BENCH_POLICY
from bench.e2e import Phase, run_phase
from bench.modes import Mode, Options
from bench.procs import ControllerProcess, child_env, controller_argv
from bench.sink import TriggerSink
from bench.stacks import StackSampler

# (substring of the file path, component), checked from the leaf of each stack upwards.
_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("/logging/", "logging (stdlib + JSON formatter)"),
    ("controller/observability/logging.py", "logging (stdlib + JSON formatter)"),
    ("/httpx/", "sink client (httpx/httpcore)"),
    ("/httpcore/", "sink client (httpx/httpcore)"),
    ("/tenacity/", "sink client (httpx/httpcore)"),
    ("/cloudevents/", "CloudEvents encoding"),
    ("/prometheus_client/", "metrics (prometheus_client)"),
    ("/pydantic", "pydantic (validation, serialization)"),
    ("/h11/", "HTTP server (uvicorn, h11)"),
    ("/uvicorn/", "HTTP server (uvicorn, h11)"),
    ("/starlette/", "web framework (starlette, FastAPI)"),
    ("/fastapi/", "web framework (starlette, FastAPI)"),
    ("controller/edge/api.py", "trm-sre: api.py"),
    # pipeline.py was split into the engine's parts; they keep its component name so results stay comparable.
    *(
        (f"controller/engine/{module}.py", "trm-sre: pipeline.py")
        for module in (
            "pipeline",
            "admission",
            "work_queue",
            "workers",
            "outbox",
            "approvals",
            "retention",
            "gauges",
            "history",
        )
    ),
    ("controller/engine/delivery.py", "trm-sre: delivery.py"),
    ("controller/engine/store/", "trm-sre: store.py"),  # the store package (was store.py)
    ("controller/decision/", "trm-sre: decision core"),
    ("controller/", "trm-sre: other"),
    ("/runbooks/", "trm-sre: runbooks catalog"),
    ("/models/", "trm-sre: model wrapper"),
    ("selectors.py", "idle (waiting in epoll)"),
    ("/asyncio/", "asyncio machinery (tasks, to_thread hand-offs)"),
    ("/concurrent/", "asyncio machinery (tasks, to_thread hand-offs)"),
    ("/threading.py", "asyncio machinery (tasks, to_thread hand-offs)"),
)


def _component(stack: list[Any]) -> str:
    for frame in reversed(stack):
        path = (frame.file_path or "").replace("\\", "/")
        for needle, name in _COMPONENTS:
            if needle in path:
                return name
    return "other (stdlib, interpreter)"


def _name(stack: list[Any]) -> str:
    """The function a sample's self time belongs to: pyinstrument's synthetic "[self]" frames name their parent's."""
    for frame in reversed(stack):
        if frame.function and not frame.function.startswith("[") and (frame.file_path or "") != "<built-in>":
            where = frame.file_path_short or frame.file_path or "?"
            return f"{frame.function} ({where}:{frame.line_no})"
    return "?"


def summarize_session(session: Any, top: int = 12) -> dict[str, Any]:
    """Self time per component and the functions with the most self time, from a pyinstrument session."""
    root = session.root_frame()
    by_component: dict[str, float] = {}
    by_function: dict[str, float] = {}
    total = 0.0

    def walk(frame: Any, stack: list[Any], serving: bool) -> None:
        nonlocal total
        stack.append(frame)
        # Only samples inside the event loop's iterations count: start-up (imports, model load) is not serving.
        serving = serving or (frame.function == "_run_once" and "base_events" in (frame.file_path or ""))
        if frame.function in ("build_components", "load_model"):
            # The first task builds the components (imports, model load) inside the loop: start-up, not serving.
            stack.pop()
            return
        own = frame.time - sum(child.time for child in frame.children)
        if own > 0 and serving:
            total += own
            comp = _component(stack)
            by_component[comp] = by_component.get(comp, 0.0) + own
            if "idle" not in comp:
                by_function[_name(stack)] = by_function.get(_name(stack), 0.0) + own
        for child in frame.children:
            walk(child, stack, serving)
        stack.pop()

    if root is not None:
        walk(root, [], False)
    idle = by_component.get("idle (waiting in epoll)", 0.0)
    busy = total - idle
    components = sorted(by_component.items(), key=lambda kv: -kv[1])
    return {
        "sampled_s": round(total, 2),
        "loop_busy_share": round(busy / total, 3) if total else None,
        "components": [
            {
                "component": k,
                "seconds": round(v, 3),
                "share_of_busy": round(v / busy, 3) if busy and "idle" not in k else None,
                "share_of_wall": round(v / total, 3) if total else None,
            }
            for k, v in components
        ],
        "top_functions": [
            {"function": k, "seconds": round(v, 3), "share_of_busy": round(v / busy, 3) if busy else None}
            for k, v in sorted(by_function.items(), key=lambda kv: -kv[1])
        ][:top],
    }


def child_main(argv: list[str]) -> int:
    """Run the controller's CLI under pyinstrument; write the summary (and the text tree) when it exits."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("cli", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cli_args = args.cli[1:] if args.cli[:1] == ["--"] else args.cli

    from pyinstrument import Profiler

    from controller.tools.cli import main as cli_main

    profiler = Profiler(interval=0.001, async_mode="disabled")
    sampler = StackSampler()
    code = 1
    profiler.start()
    sampler.start()
    try:
        code = cli_main(cli_args)
    finally:
        sampler.stop()
        session = profiler.stop()
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "profile.txt").write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        summary = summarize_session(session)
        summary["all_threads"] = sampler.summary()
        (args.out_dir / "profile.json").write_text(json.dumps(summary))
    return code


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    options = options or Options()
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-prof-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    out_dir = workdir / "profile"
    run_id = f"prof-{int(time.time())}"
    extra = ["--checkpoint", options.checkpoint] if options.checkpoint and mode.e2e_model else None
    with TriggerSink() as sink:
        argv = [
            "--out-dir",
            str(out_dir),
            "--",
            *controller_argv(workdir / "state", policies=BENCH_POLICY, model=mode.e2e_model, extra=extra),
        ]
        ctl = ControllerProcess(argv, child_env(K_SINK=sink.url), workdir / "controller.log", module="bench.profile")
        ctl.start()
        try:
            ctl.wait_ready()
            run_phase(ctl, sink, Phase("profwarm", 20, 1.0, drain_wait_s=10), run_id, workdir)
            phase = run_phase(ctl, sink, Phase("prof100", 100, mode.profile_seconds, drain_wait_s=5), run_id, workdir)
            phase.pop("_untriggered", None)
        finally:
            code = ctl.stop()
    if not (out_dir / "profile.json").exists():
        return {"error": f"the profiled controller wrote no profile (exit {code}); see {workdir / 'controller.log'}"}
    summary = json.loads((out_dir / "profile.json").read_text())
    text = (out_dir / "profile.txt").read_text()
    return {
        "rate": 100,
        "seconds": mode.profile_seconds,
        "note": "pyinstrument samples the main thread; only samples inside the event loop's iterations count "
        "(start-up is left out, a one-second warm-up and the waits around the phase are in); "
        "the phase's CPU split between the main thread and the others is from /proc",
        "phase": {
            k: phase[k]
            for k in (
                "accepted",
                "untriggered_after_wait",
                "rejected_503",
                "webhook_to_sink_ms",
                "trigger_throughput_per_s",
                "controller",
            )
        },
        "profile": summary,
        "text_head": "\n".join(text.splitlines()[:80]),
        "controller_exit_code": code,
        "workdir": str(workdir),
    }


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
