"""Section "peers" (issue #14): the floor of this stack and a peer under section 2's load phases.

- the floor (`bench.floor`): FastAPI/uvicorn, every alert fsynced to SQLite
  before the 2xx, one CloudEvent per alert to the sink with aiohttp (as the controller); no decision;
- the peer (`bench.amexecutor`): prometheus-am-executor running `curl` to the
  same sink per alert, when it builds (else the reason is reported).

Both get the same phases as trm-sre in section 2 (100 alerts/s, then 500
alerts/s for 10 s; open loop, one alert per webhook, each its own incident),
the same capture sink and the same accounting (`bench.e2e.run_phase`); the
report divides trm-sre's numbers by theirs (`compare`). Run in the same
`make bench`, minutes apart from section 2: a shared machine, so read the
ratios, not the digits.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.alerts import fingerprint
from bench.amexecutor import AmExecutorProcess, binary
from bench.coldstart import _free_port
from bench.e2e import Phase, Receiver, echo_baseline, run_phase
from bench.modes import Mode, Options
from bench.procs import ControllerProcess, child_env
from bench.sink import TriggerSink
from bench.stats import ratio

STACKS = ("floor", "am_executor")


def floor_process(workdir: Path, sink: TriggerSink) -> ControllerProcess:
    """The floor receiver (bench/floor.py) as a child process, started by the same wrapper as the controller."""
    argv = ["--state-dir", str(workdir / "floor-state"), "--sink", sink.url]
    return ControllerProcess(argv, child_env(), workdir / "floor.log", module="bench.floor")


def floor_recorded(state_dir: Path) -> set[str] | None:
    """Fingerprints the floor's store holds (read-only beside the writer, as for the controller's)."""
    path = state_dir / "floor.db"
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in conn.execute("SELECT DISTINCT fingerprint FROM alerts")}
    finally:
        conn.close()


def phases_for(mode: Mode) -> list[Phase]:
    """Section 2's rates of 100/s and up (the smoke run's one low rate otherwise), one run each."""
    rates = [r for r in mode.rates if r >= 100] or list(mode.rates[-1:])
    return [Phase(f"rate{r}", r, mode.phase_seconds, drain_wait_s=mode.drain_wait_s) for r in rates]


def _measure(target: Receiver, sink: TriggerSink, mode: Mode, run_id: str, workdir: Path) -> dict[str, Any]:
    warm = run_phase(target, sink, Phase("warmup", 5, 1.0, drain_wait_s=30), run_id, workdir)
    phases = []
    for phase in phases_for(mode):
        outcome = run_phase(target, sink, phase, run_id, workdir)
        phases.append(outcome)
    return {"warmup_untriggered": warm["untriggered_after_wait"], "phases": phases}


def _account(phases: list[dict[str, Any]], stored: set[str] | None) -> None:
    """An accepted alert not triggered by the end of its wait is lost: neither the floor nor the peer resends.

    The floor's store may still hold it (`stored_not_forwarded`), but nothing would ever forward it, unlike
    trm-sre, whose outbox resumes (section 2 counts those as queued, not lost).
    """
    for phase in phases:
        missing = set(phase.pop("_untriggered"))
        phase["queued_at_end"] = 0
        phase["lost"] = len(missing)
        if stored is not None:
            phase["stored_not_forwarded"] = len(missing & stored)


def run_floor(sink: TriggerSink, mode: Mode, run_id: str, workdir: Path) -> dict[str, Any]:
    proc = floor_process(workdir, sink)
    proc.start()
    try:
        result: dict[str, Any] = {"ready_s": round(proc.wait_ready(), 2)}
        result |= _measure(proc, sink, mode, run_id, workdir)
    finally:
        result_code = proc.stop()
    _account(result["phases"], floor_recorded(workdir / "floor-state"))
    result["exit_code"] = result_code
    return result


def run_am_executor(sink: TriggerSink, mode: Mode, run_id: str, workdir: Path) -> dict[str, Any]:
    path, why = binary()
    if path is None:
        return {"skipped": why}
    proc = AmExecutorProcess(path, sink.url, workdir / "am-executor", _free_port())
    proc.start()
    try:
        result: dict[str, Any] = {"ready_s": round(proc.wait_ready(), 2), "command": proc.command}
        result |= _measure(proc, sink, mode, run_id, workdir)
    finally:
        result_code = proc.stop()
    _account(result["phases"], None)  # no store at all
    result["exit_code"] = result_code
    result["binary"] = str(path)
    return result


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-peers-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = f"peers-{int(time.time())}"
    results: dict[str, Any] = {"mode": mode.name}
    with TriggerSink() as sink:
        results["baseline_echo"] = echo_baseline(sink, run_id, workdir, min(mode.phase_seconds, 3.0))
        # Each stack gets its own run id, so one's alerts (and fingerprints) never count for the other.
        for name, measure in (("floor", run_floor), ("am_executor", run_am_executor)):
            try:
                results[name] = measure(sink, mode, f"{run_id}-{name}", workdir)
            except (RuntimeError, OSError) as exc:
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    results["fingerprint_example"] = fingerprint(run_id, "rate100", 0)
    return results


def _cpu(phase: dict[str, Any]) -> float | None:
    """CPU over the phase, % of one core, with the children it ran (am-executor's curl processes)."""
    c = phase["controller"]
    if c.get("cpu_percent_of_one_core") is None:
        return None
    return c["cpu_percent_of_one_core"] + (c.get("cpu_children_percent_of_one_core") or 0.0)


def compare(sections: dict[str, Any]) -> dict[str, Any]:
    """trm-sre's section-2 phases as ratios of the floor's and the peer's at the same rate (> 1: trm-sre costs more).

    Latency ratios are trm-sre / other (lower is better for trm-sre); accepted and throughput ratios are
    trm-sre / other (higher is better). A ratio is None where either side did not measure it.
    """
    ours = {p["phase"]: p for p in sections.get("e2e", {}).get("phases", [])}
    peers = sections.get("peers", {})
    out: dict[str, Any] = {}
    for stack in STACKS:
        entry = peers.get(stack) or {}
        if "phases" not in entry:
            out[stack] = {"unavailable": entry.get("skipped") or entry.get("error") or "not measured"}
            continue
        rows = {}
        for theirs in entry["phases"]:
            mine = ours.get(theirs["phase"])
            if mine is None:
                continue
            rows[theirs["phase"]] = {
                "p50_webhook_to_sink": ratio(mine["webhook_to_sink_ms"]["p50"], theirs["webhook_to_sink_ms"]["p50"]),
                "p99_webhook_to_sink": ratio(mine["webhook_to_sink_ms"]["p99"], theirs["webhook_to_sink_ms"]["p99"]),
                "accepted_share": ratio(mine["accepted_share"], theirs["accepted_share"]),
                "trigger_throughput": ratio(mine["trigger_throughput_per_s"], theirs["trigger_throughput_per_s"]),
                "cpu": ratio(_cpu(mine), _cpu(theirs)),
            }
        out[stack] = rows
    return out
