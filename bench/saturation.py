"""Section "saturation" (issue #14): offered load from 50 to 1,000 alerts/s against trm-sre and the floor.

At each offered rate, for trm-sre (the controller as in section 2) and the
floor receiver (`bench.floor`), one after the other so both see the same
machine: a fresh process and state directory (so no level inherits the
last one's queue), a 1 s warm-up, then `mode.saturation_seconds` of open-loop
load, one alert per webhook, and triggers counted until
`mode.saturation_wait_s` after the last send (or until every accepted alert
has one). Per level: accepted per second (2xx over the send window),
triggered per second (triggers over first send → last trigger), p50 / p99
webhook → sink over the triggered alerts, and the p99 over every accepted
alert (an alert not triggered within the wait counts as later than any; None
when more than 1% were not). The target (issue #14: sustained ≥ 300
triggers/s with p99 ≤ 1 s) is read off trm-sre's curve: the highest
triggered rate at a level whose all-accepted p99 is ≤ 1 s.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.alerts import BENCH_POLICY
from bench.e2e import Phase, run_phase
from bench.modes import Mode, Options
from bench.peers import floor_process
from bench.procs import ControllerProcess, child_env, controller_argv
from bench.sink import TriggerSink

STACKS = ("trm-sre", "floor")
TARGET_TRIGGERS_PER_S = 300.0
TARGET_P99_MS = 1000.0


def _process(stack: str, workdir: Path, sink: TriggerSink, mode: Mode, options: Options) -> ControllerProcess:
    if stack == "floor":
        return floor_process(workdir, sink)
    extra = ["--checkpoint", options.checkpoint] if options.checkpoint and mode.e2e_model else None
    argv = controller_argv(workdir / "state", policies=BENCH_POLICY, model=mode.e2e_model, extra=extra)
    return ControllerProcess(argv, child_env(K_SINK=sink.url), workdir / "controller.log")


def point(outcome: dict[str, Any]) -> dict[str, Any]:
    """One level of the curve from a phase's outcome (`bench.e2e.run_phase`)."""
    window = outcome["send_window_s"] or 1e-9
    accepted = outcome["accepted"]
    return {
        "offered_per_s": outcome["offered_rate_target"],
        "sent_per_s": outcome["offered_rate"],
        "alerts": outcome["alerts"],
        "accepted": accepted,
        "accepted_per_s": round(accepted / window, 1),
        "rejected_503": outcome["rejected_503"],
        "failed_other": outcome["failed_other"],
        "triggered": outcome["triggered"],
        "triggered_per_s": outcome["trigger_throughput_per_s"],
        "untriggered_share": round(outcome["untriggered_after_wait"] / accepted, 4) if accepted else None,
        "p50_ms": outcome["webhook_to_sink_ms"]["p50"],
        "p99_ms": outcome["webhook_to_sink_ms"]["p99"],
        "p99_ms_all_accepted": outcome["webhook_to_sink_p99_ms_all_accepted"],
        "cpu_percent_of_one_core": outcome["controller"].get("cpu_percent_of_one_core"),
        "rss_mb_max": outcome["controller"].get("rss_mb_max"),
    }


def best_sustained(points: list[dict[str, Any]], p99_ms: float = TARGET_P99_MS) -> dict[str, Any] | None:
    """The level with the most triggers/s among those whose all-accepted p99 is within `p99_ms`."""
    ok = [
        p
        for p in points
        if p.get("triggered_per_s") is not None
        and p.get("p99_ms_all_accepted") is not None
        and p["p99_ms_all_accepted"] <= p99_ms
        and not p.get("failed_other")
    ]
    return max(ok, key=lambda p: p["triggered_per_s"], default=None)


def measure_level(
    stack: str, level: int, sink: TriggerSink, mode: Mode, options: Options, run_id: str, workdir: Path
) -> dict[str, Any]:
    here = workdir / f"{stack}-{level}"
    here.mkdir(parents=True, exist_ok=True)
    proc = _process(stack, here, sink, mode, options)
    proc.start()
    try:
        ready_s = proc.wait_ready()
        run_phase(proc, sink, Phase("warmup", 5, 1.0, drain_wait_s=10), run_id, here)
        phase = Phase(f"level{level}", level, mode.saturation_seconds, drain_wait_s=mode.saturation_wait_s)
        outcome = run_phase(proc, sink, phase, run_id, here)
    finally:
        proc.stop()
    return point(outcome) | {"ready_s": round(ready_s, 2)}


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    options = options or Options()
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-saturation-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = f"sat-{int(time.time())}"
    result: dict[str, Any] = {
        "mode": mode.name,
        "levels": list(mode.saturation_levels),
        "seconds_per_level": mode.saturation_seconds,
        "wait_s": mode.saturation_wait_s,
        "model": mode.e2e_model,
        "curves": {stack: [] for stack in STACKS},
    }
    with TriggerSink() as sink:
        for level in mode.saturation_levels:
            for stack in STACKS:  # interleaved: both stacks see the machine of the same minute
                try:
                    p = measure_level(stack, level, sink, mode, options, f"{run_id}-{stack}", workdir)
                except (RuntimeError, OSError) as exc:
                    p = {"offered_per_s": level, "error": f"{type(exc).__name__}: {exc}"[:500]}
                result["curves"][stack].append(p)
                print(json.dumps({"stack": stack} | p), file=sys.stderr, flush=True)
    result["best_sustained"] = {
        s: best_sustained([p for p in c if "error" not in p]) for s, c in result["curves"].items()
    }
    if options.plots_dir:
        from bench import plots

        result["plots"] = plots.saturation_plot(result, Path(options.plots_dir))
    return result
