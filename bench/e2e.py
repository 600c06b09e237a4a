"""Section 2, end to end: the controller as a real process, alerts in over HTTP, triggers out to a sink.

Three processes on loopback: the controller (`python -m controller run
--standalone` with a real `--state-dir`, so every alert is fsynced before its
2xx as in production, and `K_SINK` = the sink), the load generator
(`bench.loadgen`, its own process) and this one, which hosts the capture sink
and samples the controller's RSS and CPU from /proc.

Latency is POST sent → trigger arrival at the sink, matched by the alert
fingerprint the trigger carries. A loss is an alert answered 2xx whose
trigger never arrived within the drain wait. The baseline is a bare loopback
HTTP round trip (the same generator POSTing to the sink's /echo) at 100/s.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bench.alerts import BENCH_POLICY, fingerprint
from bench.env import ProcessSampler, rss_breakdown
from bench.modes import Mode, Options
from bench.procs import ControllerProcess, child_env, controller_argv
from bench.sink import TriggerSink
from bench.stats import percentile_counting_missing, ratio, summarize

TRIGGER = "io.homelab.agent-sre.lambda.trigger"


@dataclass(frozen=True)
class Phase:
    name: str
    rate: float  # alerts per second
    seconds: float
    per_payload: int = 1
    count: int | None = None
    connections: int = 256
    drain_wait_s: float = 60.0


def _loadgen(url: str, phase: Phase, run: str, workdir: Path, timeout_s: float = 30.0) -> dict[str, Any]:
    import subprocess

    out = workdir / f"loadgen-{phase.name}.json"
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--rate",
        str(phase.rate),
        "--duration",
        str(phase.seconds),
        "--per-payload",
        str(phase.per_payload),
        "--connections",
        str(phase.connections),
        "--run",
        run,
        "--phase",
        phase.name,
        "--out",
        str(out),
        "--timeout",
        str(timeout_s),
    ]
    if phase.count is not None:
        argv += ["--count", str(phase.count)]
    budget = phase.seconds + timeout_s + 120
    with open(workdir / "loadgen.log", "a") as log:
        done = subprocess.run(argv, env=child_env(), stdout=log, stderr=log, timeout=budget, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed for phase {phase.name} (see {workdir / 'loadgen.log'})")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


def _codes(rows: list[list[Any]]) -> dict[str, int]:
    codes: dict[str, int] = {}
    for row in rows:
        codes[str(row[4])] = codes.get(str(row[4]), 0) + 1
    return dict(sorted(codes.items()))


def echo_baseline(sink: TriggerSink, run: str, workdir: Path, seconds: float) -> dict[str, Any]:
    """One bare loopback HTTP round trip through Python at 100 requests/s: the floor under every latency here."""
    gen = _loadgen(sink.echo_url, Phase("echo", 100, seconds), run, workdir)
    latencies = [(r[3] - r[2]) * 1000 for r in gen["rows"] if r[4] == 200]
    return {"rate": 100, "seconds": seconds, "round_trip_ms": summarize(latencies), "codes": _codes(gen["rows"])}


class Receiver(Protocol):
    """What a phase loads: the controller, the floor receiver or the peer (a process with a webhook URL)."""

    @property
    def pid(self) -> int: ...

    @property
    def webhook_url(self) -> str: ...


def run_phase(ctl: Receiver, sink: TriggerSink, phase: Phase, run: str, workdir: Path) -> dict[str, Any]:
    """Send one phase's load, wait for its triggers (up to the drain wait), and account for every alert."""
    with ProcessSampler(ctl.pid) as sampler:
        started = time.monotonic()
        seen_upto = sink.count()  # what arrived before this phase's first send is not this phase's
        gen = _loadgen(ctl.webhook_url, phase, run, workdir)
        rows = gen["rows"]
        accepted = {r[0]: r for r in rows if isinstance(r[4], int) and 200 <= r[4] < 300}
        wanted = set(accepted)
        phase_fps = {r[0] for r in rows}
        send_end = gen["t0"] + gen["send_window_s"]
        deadline = send_end + phase.drain_wait_s
        first: dict[str, float] = {}
        others = 0
        duplicates = 0
        # Fold arrivals in as they come, so a long wait does not re-scan the whole list every poll.
        while True:
            arrivals = sink.arrivals_since(seen_upto)
            for arrival in arrivals:
                if arrival.fingerprint not in phase_fps:
                    continue
                if arrival.ce_type != TRIGGER:
                    others += 1
                elif arrival.fingerprint in first:
                    duplicates += 1
                else:
                    first[arrival.fingerprint] = arrival.at
            seen_upto += len(arrivals)
            if wanted.issubset(first) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        drained_at = time.monotonic()
    triggered = [fp for fp in wanted if fp in first]
    within_60s = sum(1 for fp in triggered if first[fp] - accepted[fp][2] <= 60.0)
    untriggered = wanted - set(first)
    e2e = [(first[fp] - accepted[fp][2]) * 1000 for fp in triggered]
    # The p99 over every accepted alert, an untriggered one counting as later than any: None when over 1% are.
    p99_all = percentile_counting_missing(e2e, len(untriggered), 99)
    http = [(r[3] - r[2]) * 1000 for r in accepted.values()]
    not_accepted_but_triggered = sum(1 for fp in first if fp not in accepted)
    send_window = gen["send_window_s"] or 1e-9
    last_arrival = max(first.values()) if first else None
    first_sent = min((r[2] for r in rows), default=started)
    result = {
        "phase": phase.name,
        "offered_rate_target": phase.rate,
        "alerts": len(rows),
        "payloads": gen["payloads"],
        "alerts_per_payload": phase.per_payload,
        "send_window_s": round(send_window, 2),
        "offered_rate": round(len(rows) / send_window, 1)
        if phase.count is None or phase.count > phase.per_payload
        else None,
        "codes": _codes(rows),
        "accepted": len(accepted),
        "accepted_share": round(len(accepted) / len(rows), 4) if rows else None,
        "accepted_rate": round(len(accepted) / send_window, 1) if gen["payloads"] > 1 else None,
        "rejected_503": sum(1 for r in rows if r[4] == 503),
        "rejected_503_share": round(sum(1 for r in rows if r[4] == 503) / len(rows), 4) if rows else None,
        "failed_other": sum(1 for r in rows if not (isinstance(r[4], int) and (200 <= r[4] < 300 or r[4] == 503))),
        "triggered": len(triggered),
        "triggered_within_60s": within_60s,
        "untriggered_after_wait": len(untriggered),
        "lost": len(untriggered),  # until `account` checks the store: queued (recorded) or lost (nowhere)
        "duplicate_triggers": duplicates,
        "other_events": others,
        "triggered_without_2xx": not_accepted_but_triggered,
        "webhook_to_sink_ms": summarize(e2e),
        "webhook_to_sink_p99_ms_all_accepted": _r(p99_all),
        "post_to_2xx_ms": summarize(http),
        "drain_s_after_last_send": round(last_arrival - send_end, 2) if last_arrival is not None else None,
        "trigger_throughput_per_s": round(len(triggered) / (last_arrival - first_sent), 1)
        if last_arrival is not None and last_arrival > first_sent
        else None,
        "waited_s": round(drained_at - started, 1),
        "generator_lag_ms": {
            "p50": _r(gen["generator_lag_ms_p50"]),
            "p99": _r(gen["generator_lag_ms_p99"]),
            "max": _r(gen["generator_lag_ms_max"]),
        },
        "controller": sampler.result,
        "_untriggered": sorted(untriggered),
    }
    return result


def recorded_fingerprints(state_dir: Path) -> set[str] | None:
    """The sender's fingerprints of every alert the controller's store holds (read-only, beside the writer)."""
    import sqlite3

    path = state_dir / "trm-sre.db"
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            # The sender's fingerprint (the one the trigger carries back) is in the stored payload; the column
            # holds the one the controller derives from the labels, which the load generator's does not match.
            query = "SELECT DISTINCT json_extract(payload, '$.alert.fingerprint') FROM alerts"
            return {row[0] for row in conn.execute(query) if row[0]}
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def account(phases: list[dict[str, Any]], untriggered: dict[str, set[str]], recorded: set[str] | None) -> None:
    """Split each phase's accepted-but-untriggered alerts into still queued (in the store) and lost (nowhere)."""
    for phase in phases:
        missing = untriggered.get(phase["phase"], set())
        if recorded is None:
            phase["queued_at_end"], phase["lost"] = None, len(missing)
        else:
            phase["queued_at_end"] = len(missing & recorded)
            phase["lost"] = len(missing - recorded)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def phases_for(mode: Mode) -> list[Phase]:
    """The fixed rates, with the storm right after the last rate the controller can drain (so it starts empty).

    Each rate above 100/s runs `mode.burst_runs` times in a row ("rate500", "rate500-run2", ...).

    Each rate's wait ends `drain_wait_s` after its last send: the 500/s target is "triggered within 60 s".
    The open-loop maximum comes last and waits only briefly: it measures capacity, and what it leaves
    queued is accounted for from the store at the end (recorded, not lost).
    """
    rates = [Phase(f"rate{r}", r, mode.phase_seconds, drain_wait_s=mode.drain_wait_s) for r in mode.rates]
    storm = Phase(
        "storm",
        mode.storm_alerts,
        1.0,
        per_payload=mode.storm_alerts,
        count=mode.storm_alerts,
        drain_wait_s=mode.drain_wait_s,
    )
    low = [p for p in rates if p.rate <= 100]
    high = []
    for p in rates:
        if p.rate > 100:
            # The burst target holds for each of several runs in a row: the same phase again, named by its run.
            high += [p] + [replace(p, name=f"{p.name}-run{i}") for i in range(2, mode.burst_runs + 1)]
    phases = [*low, storm, *high]
    if mode.max_phase:
        phases.append(Phase("max", mode.max_rate, mode.max_seconds, drain_wait_s=mode.max_drain_wait_s))
    return phases


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    options = options or Options()
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-e2e-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = f"e2e-{int(time.time())}"
    results: dict[str, Any] = {
        "mode": mode.name,
        "policy": str(BENCH_POLICY.relative_to(BENCH_POLICY.parents[2])),
        "model": mode.e2e_model,
        "workdir": str(workdir),
    }
    with TriggerSink() as sink:
        results["baseline_echo"] = echo_baseline(sink, run_id, workdir, min(mode.phase_seconds, 3.0))
        ctl = ControllerProcess(
            controller_argv(
                workdir / "state",
                policies=BENCH_POLICY,
                model=mode.e2e_model,
                extra=["--checkpoint", options.checkpoint] if options.checkpoint and mode.e2e_model else None,
            ),
            child_env(K_SINK=sink.url),
            workdir / "controller.log",
        )
        ctl.start()
        try:
            results["ready_s"] = round(ctl.wait_ready(), 2)
            # One alert first, so the first phase does not pay for the first request's imports and warm-up.
            warm = run_phase(ctl, sink, Phase("warmup", 5, 1.0, drain_wait_s=30), run_id, workdir)
            results["warmup_lost"] = warm["untriggered_after_wait"]
            phases = []
            for phase in phases_for(mode):
                outcome = run_phase(ctl, sink, phase, run_id, workdir)
                base = results["baseline_echo"]["round_trip_ms"]
                outcome["ratio_p50_to_http_baseline"] = ratio(outcome["webhook_to_sink_ms"]["p50"], base["p50"])
                outcome["ratio_p99_to_http_baseline"] = ratio(outcome["webhook_to_sink_ms"]["p99"], base["p99"])
                phases.append(outcome)
                if phase.name == "rate100":
                    results["rss_breakdown"] = rss_breakdown(ctl.pid)
                print(
                    json.dumps(
                        {k: outcome[k] for k in ("phase", "accepted", "rejected_503", "lost")}
                        | {"p50": outcome["webhook_to_sink_ms"]["p50"], "p99": outcome["webhook_to_sink_ms"]["p99"]}
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            results["controller_metrics"] = ctl.metrics()
            # Every accepted alert not triggered by the end of its wait: still in the store (queued), or lost?
            untriggered = {p["phase"]: set(p.pop("_untriggered")) for p in phases}
            account(phases, untriggered, recorded_fingerprints(workdir / "state"))
            results["phases"] = phases
        finally:
            code = ctl.stop()
        results["controller_exit_code"] = code
    results["fingerprint_example"] = fingerprint(run_id, "rate10", 0)
    return results
