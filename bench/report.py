"""BENCHMARKS.md from the results JSON: a readable table per section, the targets met or missed.

Everything numeric comes from the JSON of the same run. The only hand-written
part is `bench/analysis.md` (what the profile showed, what was changed
because of it, what would fix a missed target), included verbatim, because
what was changed cannot be measured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def _f(x: Any, digits: int = 2) -> str:
    """A number for a table: 3 significant figures-ish, '—' for missing."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        if abs(x) >= 1:
            return f"{x:.2f}"
        return f"{x:.{digits + 1}f}" if abs(x) >= 0.01 else f"{x:.4f}"
    return str(x)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |")
    return out


def _error(section: dict[str, Any]) -> list[str]:
    return [f"**This section failed:** `{section['error']}`", ""] if "error" in section else []


def _plot(plots: dict[str, str] | None, key: str, rel: str, alt: str) -> list[str]:
    if plots and key in plots:
        return [f"![{alt}]({rel}/{plots[key]})", ""]
    return []


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------


def _times(value: float | None, limit: float) -> str:
    """How far over a limit a missed value is ('' when within it)."""
    if value is None or value <= limit:
        return ""
    return f" ({_f(value / limit)}× the limit)"


def _burst_runs(e2e: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The 500 alerts/s phases in run order: rate500, rate500-run2, rate500-run3, ..."""
    return [p for name, p in e2e.items() if name == "rate500" or name.startswith("rate500-run")]


def _target(tid: str, target: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"id": tid, "target": target, "measured": measured, "met": met}


def _latency_100(p100: dict[str, Any] | None) -> dict[str, Any]:
    target = "webhook → sink p99 ≤ 50 ms at 100 alerts/s, 0 lost, no 503"
    if not p100:
        return _target("latency_100", target, "not measured", None)
    p99 = p100["webhook_to_sink_ms"]["p99"]
    late = p100["untriggered_after_wait"]
    met = (
        p99 is not None
        and p99 <= 50
        and p100["lost"] == 0
        and late == 0
        and p100["rejected_503"] == 0
        and p100["failed_other"] == 0
    )
    measured = (
        f"p99 {_f(p99)} ms{_times(p99, 50)} (p50 {_f(p100['webhook_to_sink_ms']['p50'])})"
        + (f" over the {p100['triggered']:,} triggered; {late:,} more not triggered within the wait" if late else "")
        + f"; lost {p100['lost']}, 503 {p100['rejected_503']}, other failures {p100['failed_other']}"
    )
    return _target("latency_100", target, measured, met)


def _burst_500(runs: list[dict[str, Any]]) -> dict[str, Any]:
    target = (
        "500 alerts/s for 10 s: ≥ 95% accepted in each of 3 consecutive runs, every accepted alert triggered "
        "within 60 s, 0 lost"
    )
    if not runs:
        return _target("burst_500", target, "not measured", None)
    parts, ok = [], []
    for i, p in enumerate(runs, 1):
        share = p["accepted_share"] or 0.0
        good = (
            share >= 0.95 and p["failed_other"] == 0 and p["lost"] == 0 and p["triggered_within_60s"] == p["accepted"]
        )
        ok.append(good)
        queued = p.get("queued_at_end")
        parts.append(
            f"run {i}: {_pct(share)} accepted ({p['accepted']:,} of {p['alerts']:,}; {p['rejected_503']:,} × 503"
            + (f", {p['failed_other']} other failures" if p["failed_other"] else "")
            + f"), {p['triggered_within_60s']:,} triggered within 60 s"
            + (f" ({queued:,} still queued at the end)" if queued else "")
            + f", lost {p['lost']}"
        )
    measured = "; ".join(parts)
    if len(runs) < 3:
        measured += f" — {len(runs)} run(s) in this mode, the target asks for 3"
    met: bool | None = all(ok) if len(runs) >= 3 or not all(ok) else None
    return _target("burst_500", target, measured, met)


def _sustained(sat: dict[str, Any]) -> dict[str, Any]:
    target = "sustained ≥ 300 triggers/s with p99 ≤ 1 s (saturation curve)"
    curve = [p for p in sat.get("curves", {}).get("trm-sre", []) if "error" not in p]
    if not curve:
        return _target("sustained_300", target, "not measured", None)
    best = (sat.get("best_sustained") or {}).get("trm-sre")
    top = max(curve, key=lambda p: p.get("triggered_per_s") or 0)
    seconds = f"{_f(sat.get('seconds_per_level'))} s per level"
    if best is None:
        measured = f"no level kept p99 ≤ 1 s; the most triggers/s was {_f(top.get('triggered_per_s'))} at {top['offered_per_s']}/s offered"
        return _target("sustained_300", target, measured + f" ({seconds})", False)
    measured = (
        f"{_f(best['triggered_per_s'])} triggers/s with p99 {_f(best['p99_ms_all_accepted'])} ms at "
        f"{best['offered_per_s']}/s offered (the best level within p99 ≤ 1 s"
        + (f"; {_f(300 / best['triggered_per_s'])}× short of 300" if best["triggered_per_s"] < 300 else "")
        + f"); peak {_f(top.get('triggered_per_s'))} triggers/s at {top['offered_per_s']}/s offered ({seconds})"
    )
    return _target("sustained_300", target, measured, best["triggered_per_s"] >= 300)


def _rss(sections: dict[str, Any], p100: dict[str, Any] | None) -> dict[str, Any]:
    target = "controller resident memory ≤ 250 MB after 60 s at 100 alerts/s"
    onnx = ((sections.get("runtimes") or {}).get("runtimes") or {}).get("onnx") or {}
    load = (onnx.get("controller") or {}).get("under_load") or {}
    if load.get("rss_mb_after") is not None:
        rss, seconds = load["rss_mb_after"], load.get("seconds")
        note = "" if (seconds or 0) >= 60 else f"; quick mode: after {_f(seconds)} s, not 60"
        measured = f"{_f(rss)} MB{_times(rss, 250)} after {_f(load.get('seconds'))} s at 100 alerts/s (ONNX runtime, section TRM runtimes{note})"
    elif p100 and p100["controller"].get("rss_mb_max") is not None:
        rss = p100["controller"]["rss_mb_max"]
        measured = (
            f"{_f(rss)} MB{_times(rss, 250)} peak during section 2's {_f(p100['send_window_s'])} s phase at 100 alerts/s "
            "(not after 60 s: the runtimes section did not measure it)"
        )
    else:
        return _target("rss_100", target, "not measured", None)
    return _target("rss_100", target, measured, rss <= 250)


def _readiness(sections: dict[str, Any]) -> dict[str, Any]:
    target = "readiness ≤ 2 s from process start (model loaded; every start)"
    ready = (sections.get("coldstart") or {}).get("readyz", {}).get("ms", {}).get("controller with the TRM")
    onnx = (((sections.get("runtimes") or {}).get("runtimes") or {}).get("onnx") or {}).get("controller") or {}
    parts, worst = [], []
    if ready and ready.get("n"):
        parts.append(
            f"median {_f(ready['p50'] / 1000)} s, slowest {_f(ready['max'] / 1000)} s of {ready['n']} starts (section 4)"
        )
        worst.append(ready["max"] / 1000)
    if (onnx.get("ready_ms") or {}).get("n"):
        r = onnx["ready_ms"]
        parts.append(f"ONNX runtime: median {_f(r['p50'] / 1000)} s, slowest {_f(r['max'] / 1000)} s of {r['n']}")
        worst.append(r["max"] / 1000)
    if not worst:
        return _target("readyz", target, "not measured", None)
    return _target("readyz", target, "; ".join(parts) + _times(max(worst), 2), max(worst) <= 2)


def _install(sections: dict[str, Any]) -> dict[str, Any]:
    target = "the serving install (`pip install .`, no extras) ≤ 400 MB on disk and no torch"
    inst = (sections.get("runtimes") or {}).get("serving_install") or {}
    if inst.get("mb") is None:
        why = inst.get("skipped") or inst.get("error") or "not measured"
        return _target("serving_install", target, str(why)[:200], None)
    torch = inst.get("torch_installed")
    measured = f"{_f(inst['mb'])} MB{_times(inst['mb'], 400)}, torch {'installed' if torch else 'not installed'}"
    return _target("serving_install", target, measured, inst["mb"] <= 400 and not torch)


def _trm(sections: dict[str, Any]) -> dict[str, Any]:
    target = "TRM p50 ≤ 5 ms, p99 ≤ 10 ms at batch 1 on one thread (ONNX Runtime, the served runtime)"
    runtimes = (sections.get("runtimes") or {}).get("runtimes") or {}
    onnx = (runtimes.get("onnx") or {}).get("trm") or {}
    torch = (runtimes.get("torch") or {}).get("trm") or {}
    selectors = {r["selector"]: r for r in (sections.get("selection") or {}).get("selectors", [])}
    sel = selectors.get("TRM, batch 1") or {}
    also = []
    if (torch.get("latency_ms") or {}).get("p50") is not None:
        also.append(f"torch: p50 {_f(torch['latency_ms']['p50'])}, p99 {_f(torch['latency_ms']['p99'])}")
    if (sel.get("latency_ms") or {}).get("p50") is not None:
        also.append(f"section 1 (torch): p50 {_f(sel['latency_ms']['p50'])}, p99 {_f(sel['latency_ms']['p99'])}")
    lat = onnx.get("latency_ms") or {}
    if lat.get("p50") is None:
        return _target(
            "trm_latency", target, "ONNX runtime not measured" + (f"; {'; '.join(also)}" if also else ""), None
        )
    measured = (
        f"p50 {_f(lat['p50'])} ms{_times(lat['p50'], 5)}, p99 {_f(lat['p99'])} ms{_times(lat['p99'], 10)} (n = {lat['n']})"
        + (f"; {'; '.join(also)}" if also else "")
    )
    return _target("trm_latency", target, measured, lat["p50"] <= 5 and lat["p99"] <= 10)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue #14 with what was measured and whether it was met (None: not measured)."""
    sections = results.get("sections", {})
    e2e = {p["phase"]: p for p in sections.get("e2e", {}).get("phases", [])}
    p100 = e2e.get("rate100")
    return [
        _latency_100(p100),
        _burst_500(_burst_runs(e2e)),
        _sustained(sections.get("saturation") or {}),
        _rss(sections, p100),
        _readiness(sections),
        _install(sections),
        _trm(sections),
    ]


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def _selection(sel: dict[str, Any], rel: str) -> list[str]:
    lines = ["## 1. Selection", ""]
    lines += _error(sel)
    if "selectors" not in sel:
        return lines
    lines += [
        (
            f"The same {sel['alerts']} held-out alerts (`{sel['dataset']}`: alert names the model never saw) for every "
            "selector, one thread, after a warm-up. Latency is per call (per decision at batch 1, per batch call in the "
            "batched rows); **×rules** is the p50 per decision divided by the rules stage's p50 in this run. "
            "Exact match = function and every expected parameter right (abstentions count as right when no action is expected)."
        ),
        "",
    ]
    rows = []
    for r in sel["selectors"]:
        if "unavailable" in r:
            rows.append([r["selector"], "not available", "", "", "", "", "", r["unavailable"][:160]])
            continue
        acc = r.get("accuracy") or {}
        note = r.get("note", "")
        if "client_overhead_ms_p50" in r:
            note = (
                f"bare HTTP exchange p50 {_f(r['bare_http_exchange_ms']['p50'])} ms → client overhead "
                f"{_f(r['client_overhead_ms_p50'])} ms p50; " + note
            )
        rows.append(
            [
                r["selector"],
                r["latency_ms"]["p50"],
                r["latency_ms"]["p99"],
                r.get("ratio_p50_to_rules"),
                r.get("throughput_per_s"),
                _pct(acc.get("exact_match")) if acc else "—",
                _pct(acc.get("function_accuracy")) if acc else "—",
                note,
            ]
        )
    lines += _table(
        [
            "selector",
            "p50 ms",
            "p99 ms",
            "×rules (p50/decision)",
            "decisions/s",
            "exact match",
            "function right",
            "note",
        ],
        rows,
    )
    lines.append("")
    models = sel.get("models", {})
    if models:
        lines += [
            (
                "Model footprint (RSS measured in a fresh process: interpreter, then `import torch`, then the model "
                "loaded and one decision made):"
            ),
            "",
        ]
        rows = [
            [
                name,
                m["parameters"],
                m["checkpoint_mb"],
                m.get("rss_mb_after_import_torch"),
                m.get("rss_mb_with_model_loaded"),
                m.get("rss_mb_model_alone"),
            ]
            for name, m in models.items()
        ]
        lines += _table(
            [
                "model",
                "parameters",
                "checkpoint MB",
                "RSS after import torch MB",
                "RSS with model MB",
                "model's own MB",
            ],
            rows,
        )
        lines.append("")
    if not sel.get("plain_available"):
        lines += [f"Plain-transformer baseline: not available ({sel.get('plain_error')}).", ""]
    sweeps = sel.get("trm_sweeps")
    if sweeps:
        tr = sweeps["trained"]
        lines += [
            "### TRM cost against supervision steps, recursion sizes and the halting threshold",
            "",
            (
                f"Trained configuration: n_latent {tr['n_latent']}, T {tr['t_recursions']}, up to {tr['max_steps']} "
                f"supervision steps, halting threshold {tr['halt_threshold']}; accuracy at the model's default "
                f"threshold {tr['default_threshold']}. Latency: batch 1, one thread."
            ),
            "",
        ]
        rows = [
            [p["steps"], p["latency_ms"]["p50"], p["latency_ms"]["p99"], _pct(p["accuracy"]["exact_match"])]
            for p in sweeps["forced_steps"]
        ]
        lines += ["Forced number of supervision steps (no early halting):", ""]
        lines += _table(["steps", "p50 ms", "p99 ms", "exact match"], rows)
        lines.append("")
        lines += _plot(sel.get("plots"), "steps", rel, "TRM cost by supervision steps")
        rows = [
            [
                f"{p['n_latent']} × {p['t_recursions']}" + (" (trained)" if p["trained"] else ""),
                p["net_applications_per_step"],
                p["latency_ms"]["p50"],
                p["latency_ms"]["p99"],
                p["mean_steps"],
                _pct(p["accuracy"]["exact_match"]),
            ]
            for p in sweeps["recursion_sizes"]
        ]
        lines += [
            (
                "Recursion sizes (n latent updates × T recursions per step; the same weights, not retrained for the "
                "other sizes, so their accuracy only shows what the trained weights tolerate):"
            ),
            "",
        ]
        lines += _table(["n × T", "net passes per step", "p50 ms", "p99 ms", "mean steps", "exact match"], rows)
        lines.append("")
        rows = [
            [
                "never (run all steps)"
                if p["halt_threshold"] > 1
                else f"{p['halt_threshold']:g}" + (" (trained)" if p["trained"] else ""),
                p["latency_ms"]["p50"],
                p["latency_ms"]["p99"],
                p["mean_steps"],
                _pct(p["accuracy"]["exact_match"]),
                _pct(p["accuracy"]["wrong_action_rate"]),
            ]
            for p in sweeps["halting_threshold"]
        ]
        lines += ["Halting threshold (stop once the halting probability reaches it):", ""]
        lines += _table(["halt threshold", "p50 ms", "p99 ms", "mean steps", "exact match", "wrong action"], rows)
        lines.append("")
        lines += _plot(sel.get("plots"), "threshold", rel, "Accuracy against latency by halting threshold")
    return lines


def _e2e(e2e: dict[str, Any], rel: str) -> list[str]:
    lines = ["## 2. End to end", ""]
    lines += _error(e2e)
    if "phases" not in e2e:
        return lines
    base = e2e["baseline_echo"]["round_trip_ms"]
    lines += [
        (
            f"`python -m controller run --standalone --policies {e2e['policy']}` with a real `--state-dir` (alerts fsynced "
            f"before the 2xx) and `K_SINK` = a loopback capture sink; model {'loaded' if e2e['model'] else 'disabled'}. "
            "The load generator is a separate process (aiohttp, open loop: each payload leaves on schedule whatever "
            "happened to the previous ones), one alert per payload, each alert a new incident (its own pod). Latency = "
            "POST sent → trigger at the sink, matched by the fingerprint in the trigger's data, over the alerts triggered "
            "within the wait (60 s after the last send; the open-loop maximum waits less). An accepted alert not triggered "
            "by then is looked up in the controller's store at the end: still queued there (recorded, it will be "
            "triggered; a restart resumes it) or lost (nowhere). Baseline in this run: a bare loopback HTTP round trip through Python at "
            f"100/s, p50 {_f(base['p50'])} ms, p99 {_f(base['p99'])} ms."
        ),
        "",
    ]
    rows = []
    for p in e2e["phases"]:
        c = p["controller"]
        lat = p["webhook_to_sink_ms"]
        http = p["post_to_2xx_ms"]
        rows.append(
            [
                p["phase"],
                p["offered_rate"] if p["offered_rate"] is not None else f"{p['alerts']} in 1 payload",
                f"{p['accepted']:,} ({_pct(p['accepted_share'])})",
                p["rejected_503"],
                p["failed_other"],
                lat["p50"],
                lat["p99"],
                p.get("ratio_p50_to_http_baseline"),
                http["p50"],
                http["p99"],
                p["untriggered_after_wait"],
                p.get("queued_at_end"),
                p["lost"],
                p["duplicate_triggers"],
                p["drain_s_after_last_send"],
                p["trigger_throughput_per_s"],
                c.get("rss_mb_max"),
                (
                    f"{_f(c.get('cpu_percent_of_one_core'))} ({_f(c.get('cpu_main_thread_percent'))} / "
                    f"{_f(c.get('cpu_other_threads_percent'))})"
                ),
                p["generator_lag_ms"]["p99"],
            ]
        )
    lines += _table(
        [
            "phase",
            "offered alerts/s",
            "accepted",
            "503",
            "other failures",
            "→ sink p50 ms",
            "→ sink p99 ms",
            "×HTTP baseline (p50)",
            "POST→2xx p50 ms",
            "POST→2xx p99 ms",
            "not triggered within the wait",
            "of those still queued in the store",
            "lost",
            "duplicate triggers",
            "drain s",
            "triggers/s",
            "RSS max MB",
            "CPU % of a core (main / other threads)",
            "generator lag p99 ms",
        ],
        rows,
    )
    lines.append("")
    storm = next((p for p in e2e["phases"] if p["phase"] == "storm"), None)
    if storm:
        lines += [
            (
                f"Storm shape: one Alertmanager group of {storm['alerts']} alerts in a single payload: answered after "
                f"{_f(storm['post_to_2xx_ms']['p50'])} ms (all {storm['alerts']} recorded in one transaction); first "
                f"trigger after {_f(storm['webhook_to_sink_ms']['min'])} ms, median "
                f"{_f(storm['webhook_to_sink_ms']['p50'])} ms, last after {_f(storm['webhook_to_sink_ms']['max'])} ms; {storm['triggered']} triggered, "
                f"{storm['lost']} lost. The bench policy's storm breaker allows 100,000 triggers per window so that "
                "this measures throughput; with the default (20 per 10 minutes) all but 20 would be escalated, by design."
            ),
            "",
        ]
    lines += _plot(e2e.get("plots"), "e2e", rel, "End-to-end latency by phase")
    metrics = e2e.get("controller_metrics")
    if metrics:
        lines += [
            (
                f"The controller's own count at the end: {metrics.get('alerts_received', 0):,.0f} alerts received, "
                f"{metrics.get('triggers_sent', 0):,.0f} triggers sent, "
                f"{metrics.get('triggers_dead_lettered', 0):,.0f} dead-lettered."
            ),
            "",
        ]
    if e2e.get("rss_breakdown"):
        b = e2e["rss_breakdown"]
        lines += [
            (
                f"RSS of the controller after the 100 alerts/s phase, by mapping (from /proc/PID/smaps): "
                f"anonymous {_f(b.get('anonymous_mb'))} MB, CUDA libraries {_f(b.get('cuda_libraries_mb'))} MB, "
                f"torch CPU libraries {_f(b.get('torch_libraries_mb'))} MB, other files {_f(b.get('other_files_mb'))} MB."
            ),
            "",
        ]
    return lines


_STACK_NAMES = {"floor": "the floor (bench/floor.py)", "am_executor": "prometheus-am-executor + curl"}


def _ratios(sections: dict[str, Any]) -> list[str]:
    """trm-sre as a ratio of the floor and of the peer, phase by phase (the summary under the targets)."""
    from bench.peers import compare

    if "peers" not in sections or "e2e" not in sections:
        return []
    lines = [
        "## trm-sre beside the floor and a peer",
        "",
        (
            "trm-sre's section-2 phases divided by the same phases against the floor of this stack (the same "
            "server libraries, every alert fsynced, one CloudEvent forwarded, no decision) and against "
            "prometheus-am-executor running `curl` per alert (section 2a). Latency: trm-sre ÷ other, above 1 = "
            "trm-sre slower; accepted and triggers/s: trm-sre ÷ other, below 1 = trm-sre took or delivered less; "
            "CPU: trm-sre ÷ other (with the peer's curl processes)."
        ),
        "",
    ]
    rows = []
    for stack, entry in compare(sections).items():
        if "unavailable" in entry:
            rows.append([_STACK_NAMES[stack], "—", f"not measured: {str(entry['unavailable'])[:200]}", "", "", "", ""])
            continue
        for phase, r in entry.items():
            rows.append(
                [
                    _STACK_NAMES[stack],
                    phase,
                    r["p50_webhook_to_sink"],
                    r["p99_webhook_to_sink"],
                    r["accepted_share"],
                    r["trigger_throughput"],
                    r["cpu"],
                ]
            )
    if not rows:
        return lines + ["No phase of section 2 ran against the others in this run.", ""]
    lines += _table(["trm-sre ÷", "phase", "→ sink p50", "→ sink p99", "accepted share", "triggers/s", "CPU"], rows)
    lines.append("")
    return lines


def _peers(peers: dict[str, Any]) -> list[str]:
    lines = ["## 2a. The floor and a peer under section 2's load", ""]
    lines += _error(peers)
    if "baseline_echo" not in peers:
        return lines
    base = peers["baseline_echo"]["round_trip_ms"]
    lines += [
        (
            "The same load generator, capture sink and accounting as section 2, against two other receivers. "
            "**The floor** (`bench/floor.py`): FastAPI on uvicorn (h11, no access log), every alert stored in "
            "SQLite (WAL, `synchronous=FULL`, concurrent webhooks in one commit) before the 200, then one "
            "binary-mode CloudEvent per alert posted with one `aiohttp.ClientSession` (the controller's sink client): what trm-sre's durability costs "
            "with no decision, no outbox and no retries. **The peer**: prometheus-am-executor (Go) running a "
            "command per webhook, here a `curl` of one CloudEvent to the sink; it answers after the command "
            "exits, keeps no queue and no store. For both, an accepted alert not triggered within the wait is "
            "lost (neither resends). Baseline in this run: a bare loopback HTTP round trip at 100/s, p50 "
            f"{_f(base['p50'])} ms, p99 {_f(base['p99'])} ms."
        ),
        "",
    ]
    rows = []
    for stack in ("floor", "am_executor"):
        entry = peers.get(stack) or {}
        if "phases" not in entry:
            why = entry.get("skipped") or entry.get("error") or "not measured"
            rows.append([_STACK_NAMES[stack], f"not measured: {str(why)[:300]}"] + [""] * 10)
            continue
        for p in entry["phases"]:
            c = p["controller"]
            rows.append(
                [
                    _STACK_NAMES[stack],
                    p["phase"],
                    p["offered_rate"],
                    f"{p['accepted']:,} ({_pct(p['accepted_share'])})",
                    p["rejected_503"],
                    p["failed_other"],
                    p["webhook_to_sink_ms"]["p50"],
                    p["webhook_to_sink_ms"]["p99"],
                    p["lost"],
                    p["trigger_throughput_per_s"],
                    c.get("rss_mb_max"),
                    (c.get("cpu_percent_of_one_core") or 0) + (c.get("cpu_children_percent_of_one_core") or 0),
                ]
            )
    lines += _table(
        [
            "receiver",
            "phase",
            "offered alerts/s",
            "accepted",
            "503",
            "other failures",
            "→ sink p50 ms",
            "→ sink p99 ms",
            "lost",
            "triggers/s",
            "RSS max MB",
            "CPU % of a core (with children)",
        ],
        rows,
    )
    lines.append("")
    command = (peers.get("am_executor") or {}).get("command")
    if command:
        lines += [f"The peer's command: {command}.", ""]
    return lines


def _saturation(sat: dict[str, Any], rel: str) -> list[str]:
    lines = ["## 2b. Saturation curve", ""]
    lines += _error(sat)
    if "curves" not in sat:
        return lines
    lines += [
        (
            f"Offered load from {sat['levels'][0]} to {sat['levels'][-1]} alerts/s, open loop, one alert per "
            f"webhook, {_f(sat['seconds_per_level'])} s per level; a fresh process and state directory per level and "
            f"stack (trm-sre with the model {'loaded' if sat.get('model') else 'off'}, then the floor, level by "
            f"level); triggers counted until {_f(sat['wait_s'])} s after the last send. Accepted/s = 2xx over the "
            "send window; triggers/s = triggers over first send → last trigger; p50 / p99 over the alerts "
            'triggered within the wait; "p99 all" counts an accepted alert not triggered within the wait as '
            "later than any (— when more than 1% were)."
        ),
        "",
    ]
    rows = []
    for stack, points in sat["curves"].items():
        for p in points:
            if "error" in p:
                rows.append([stack, p["offered_per_s"], f"failed: {p['error'][:200]}"] + [""] * 7)
                continue
            rows.append(
                [
                    stack,
                    p["offered_per_s"],
                    p["accepted_per_s"],
                    p["rejected_503"],
                    p["triggered_per_s"],
                    _pct(p["untriggered_share"]),
                    p["p50_ms"],
                    p["p99_ms"],
                    p["p99_ms_all_accepted"],
                    p["cpu_percent_of_one_core"],
                ]
            )
    lines += _table(
        [
            "stack",
            "offered/s",
            "accepted/s",
            "503",
            "triggers/s",
            "not triggered in the wait",
            "→ sink p50 ms",
            "→ sink p99 ms",
            "p99 all accepted ms",
            "CPU % of a core",
        ],
        rows,
    )
    lines.append("")
    lines += _plot(
        sat.get("plots"), "saturation", rel, "Saturation curve: accepted, triggered and latency by offered rate"
    )
    return lines


def _scale(scale: dict[str, Any], rel: str) -> list[str]:
    lines = ["## 3. Scale curves", ""]
    lines += _error(scale)
    if "curves" not in scale:
        return lines
    lines += [
        (
            "Each cell: p50 of many timed calls (µs-scale calls are timed in groups), in ms. Growth: the log-log slope "
            "over the upper half of the range (0 = flat, 1 = linear) and the class it puts the curve in; last/first is "
            "the cost at the largest size over the cost at the smallest."
        ),
        "",
    ]
    for curve in scale["curves"]:
        lines += [f"### {curve['title']}", ""]
        if curve["name"] == "trm_batch":
            rows = [
                [p["n"]]
                + [x for s in curve["series"] for x in (p[s]["p50"], p[s]["batch_ms_p50"], p[s]["throughput_per_s"])]
                for p in curve["points"]
            ]
            headers = ["batch"] + [
                h for s in curve["series"] for h in (f"{s}: ms/decision", f"{s}: ms/batch", f"{s}: decisions/s")
            ]
        else:
            rows = [[p["n"]] + [p[s]["p50"] if s in p else None for s in curve["series"]] for p in curve["points"]]
            headers = [curve["x"]] + curve["series"]
        lines += _table(headers, rows)
        lines.append("")
        for s in curve["series"]:
            g = curve["growth"][s]
            lines.append(
                f"- **{s}**: {g['class']} (slope {_f(g['slope'])}, last/first {_f(g.get('last_over_first'))}). "
                f"Why: {curve['why'][s]}."
            )
        lines.append("")
    lines += _plot(scale.get("plots"), "scale", rel, "Scale curves")
    lines += _plot(scale.get("plots"), "batch", rel, "TRM throughput by batch size")
    return lines


def _coldstart(cold: dict[str, Any]) -> list[str]:
    lines = ["## 4. Cold start", ""]
    lines += _error(cold)
    ready = cold.get("readyz")
    if ready:
        lines += [
            (
                f"Process spawned → first `/readyz` 200 (polled every 20 ms on a port chosen beforehand), "
                f"{ready['repeats']} starts each, a fresh state directory each time. Baselines in the same run: a bare "
                "interpreter and `import torch` alone."
            ),
            "",
        ]
        rows = [
            [name, s["p50"] / 1000, s["max"] / 1000, ready["ratio_p50_to_bare_interpreter"][name]]
            for name, s in ready["ms"].items()
        ]
        lines += _table(["process", "median s", "slowest s", "× bare interpreter (median)"], rows)
        lines.append("")
    op = cold.get("operator", {})
    if "unavailable" in op or "skipped" in op or "error" in op:
        lines += [
            f"Operator against the test apiserver: {op.get('unavailable') or op.get('skipped') or op.get('error')}",
            "",
        ]
    elif op:
        rows = [
            ["operator start → kopf ready flag", op.get("operator_start_to_ready_flag_ms")],
            ["operator start → first policy indexed", op.get("operator_start_to_first_policy_ms")],
            [f"operator start → all {op['policies']} policies indexed", op.get("operator_start_to_all_policies_ms")],
            ["`kubectl apply` of a new policy started → indexed, median of 3", op["created_to_indexed_ms"]["p50"]],
            ["(of which kubectl's own run, median)", (op.get("kubectl_apply_ms") or {}).get("p50")],
            [
                "controller in cluster mode: process start → /readyz 200",
                op.get("cluster_mode_process_start_to_readyz_ms"),
            ],
        ]
        lines += [
            (
                f"Against a real kube-apiserver + etcd (`tests/envtest/controlplane.start_control_plane`, itself "
                f"{_f(op.get('control_plane_start_s'))} s to start), {op['policies']} RemediationPolicies created "
                "before the operator starts:"
            ),
            "",
        ]
        lines += _table(["measure", "ms"], rows)
        lines.append("")
    return lines


def _profile(prof: dict[str, Any]) -> list[str]:
    lines = ["## 5. Profile", ""]
    lines += _error(prof)
    if "profile" not in prof:
        return lines
    p = prof["profile"]
    ph = prof["phase"]
    c = ph["controller"]
    lines += [
        (
            f"The controller under pyinstrument (1 ms sampling of the main thread) at {prof['rate']} alerts/s for "
            f"{_f(prof['seconds'])} s ({ph['accepted']} accepted, {ph['untriggered_after_wait']} not triggered within 5 s of the "
            f"last send, {_f(ph.get('trigger_throughput_per_s'))} triggers/s; under the profiler's overhead "
            f"→ sink p50 {_f(ph['webhook_to_sink_ms']['p50'])} ms, p99 {_f(ph['webhook_to_sink_ms']['p99'])} ms). "
            f"CPU over the phase (/proc): {_f(c.get('cpu_percent_of_one_core'))}% of one core, main thread "
            f"{_f(c.get('cpu_main_thread_percent'))}%, other threads {_f(c.get('cpu_other_threads_percent'))}%. "
            f"Event loop busy {_pct(p.get('loop_busy_share'))} of the sampled time. {prof['note']}."
        ),
        "",
    ]
    rows = [
        [x["component"], x["seconds"], _pct(x["share_of_busy"]) if x["share_of_busy"] is not None else "—"]
        for x in p["components"][:12]
    ]
    lines += _table(["component (main thread)", "seconds sampled", "share of busy time"], rows)
    lines.append("")
    rows = [[f"`{x['function']}`", x["seconds"], _pct(x["share_of_busy"])] for x in p["top_functions"][:10]]
    lines += ["Functions with the most self time (C calls counted in their Python caller):", ""]
    lines += _table(["function", "seconds", "share of busy time"], rows)
    lines.append("")
    threads = (p.get("all_threads") or {}).get("threads", {})
    workers = threads.get("asyncio.to_thread workers")
    if workers:
        lines += [
            (
                "Where the `asyncio.to_thread` workers were (all-threads sampler, every 2 ms; a worker's innermost "
                "frame of trm-sre code, or where it waits):"
            ),
            "",
        ]
        rows = [[f"`{w['at']}`", _pct(w["share"])] for w in workers["where_ours"][:8]]
        lines += _table(["where", "share of worker samples"], rows)
        lines.append("")
    return lines


def _tracing(tr: dict[str, Any]) -> list[str]:
    lines = ["## 6. Tracing on vs off", ""]
    lines += _error(tr)
    if "configs" not in tr:
        return lines
    lines += [
        (
            "The end-to-end path (section 2's load, Alertmanager webhooks → trigger at the sink) against three fresh "
            "controllers: tracing off (no OTEL_* variables), on (every span exported over OTLP/HTTP to a real "
            "OpenTelemetry Collector on loopback), and on with nothing listening at the OTLP endpoint. "
            f"Spans the collector received: {tr.get('spans_exported', '—')}. Ratios are on / off; a shared, noisy "
            "machine: read them as rough."
        ),
        "",
    ]
    rows = []
    for name, config in tr["configs"].items():
        for phase_name, p in config["phases"].items():
            rows.append(
                [
                    name,
                    phase_name,
                    p["accepted"],
                    p["lost"],
                    _f(p["post_to_2xx_ms"]["p50"]),
                    _f(p["webhook_to_sink_ms"]["p50"]),
                    _f(p["webhook_to_sink_ms"]["p99"]),
                    _f(p["cpu_percent_of_one_core"]),
                ]
            )
    lines += _table(
        [
            "tracing",
            "phase",
            "accepted",
            "lost",
            "POST→2xx p50 ms",
            "→ sink p50 ms",
            "→ sink p99 ms",
            "CPU % of a core",
        ],
        rows,
    )
    lines.append("")
    rows = [
        [key, _f(r["p50_post_to_2xx"]), _f(r["p50_webhook_to_sink"]), _f(r["p99_webhook_to_sink"]), _f(r["cpu"])]
        for key, r in tr.get("ratios_to_off", {}).items()
    ]
    if rows:
        lines += _table(["vs off", "POST→2xx p50", "→ sink p50", "→ sink p99", "CPU"], rows)
        lines.append("")
    return lines


def _replicas(rp: dict[str, Any]) -> list[str]:
    lines = ["## 7. Replicas: PostgreSQL with 1, 2 and 3 controllers, next to SQLite", ""]
    lines += _error(rp)
    if "configs" not in rp:
        return lines
    lines += [
        (
            f"A burst of {rp.get('alerts')} distinct incidents (webhooks of 10 alerts, 16 concurrent senders, spread "
            "round-robin over the replicas; a 503 is retried after Retry-After) against fresh controllers (PostgreSQL "
            "on loopback, fsync on), the TRM off "
            "(rules decide: this measures the store and the coordination, not the model). Throughput is incidents "
            "decided and delivered per second, first POST to last trigger. CPU is over the burst: the controllers "
            f"together, and the PostgreSQL server's processes. Machine: {rp.get('cores')} cores, shared by the "
            f"controllers, the database, the load generator and the sink ({rp.get('mode')} mode, measured "
            f"{rp.get('measured_at', 'with the rest')})."
        ),
        "",
    ]
    rows = []
    for name, c in rp["configs"].items():
        r = rp.get("ratios", {}).get(name, {})
        rows.append(
            [
                name,
                c["triggered"],
                c["lost"],
                c["duplicate_deliveries"],
                c["retried_503"],
                _f(c["alerts_per_s"]),
                _f(r.get("throughput_to_sqlite_1")),
                _f(r.get("throughput_to_postgresql_1")),
                _f(c["post_to_2xx_ms"]["p50"]),
                _f(c["post_to_2xx_ms"]["p99"]),
                _f(c["cpu_ms_per_alert_controllers"]),
                _f(c["cpu_ms_per_alert_database"]),
            ]
        )
    lines += _table(
        [
            "store-replicas",
            "triggered",
            "lost",
            "repeated deliveries",
            "503 retries",
            "alerts/s",
            "× SQLite-1",
            "× PostgreSQL-1",
            "POST→2xx p50 ms",
            "POST→2xx p99 ms",
            "controller CPU ms/alert",
            "database CPU ms/alert",
        ],
        rows,
    )
    pg1 = rp["configs"].get("postgresql-1", {})
    where = ""
    if pg1.get("cpu_ms_per_alert_controllers") and pg1.get("cpu_ms_per_alert_database"):
        ctl_ms, db_ms = pg1["cpu_ms_per_alert_controllers"], pg1["cpu_ms_per_alert_database"]
        share = ctl_ms / (ctl_ms + db_ms)
        where = (
            f"Where the time goes (one replica on PostgreSQL): {_f(ctl_ms)} ms of controller CPU and {_f(db_ms)} ms "
            f"of database CPU per alert ({_f(100 * share)}% in the controller): one controller core decides and "
            f"delivers about {_f(1000 / ctl_ms)} alerts/s, one database core serves about {_f(1000 / db_ms)}. "
            "The 2xx waits for the durable commit of the webhook's alerts, now a network round trip per statement "
            "plus PostgreSQL's WAL flush, shared by the group commit; with more replicas on the same cores each "
            "waits longer for CPU, which is the latency growth in the table. "
        )
    lines += [
        "",
        where
        + (
            "How to size replicas. Replicas buy availability first: every replica serves webhooks, one can die or be "
            "drained without a 503 window, and its claimed work moves to the others after `engine.claim_lease_s`. "
            "Throughput grows with replicas only while there are cores for them *and* for PostgreSQL: per alert, "
            "a PostgreSQL commit costs the controller more CPU than SQLite's (a network round trip per statement, "
            "the pool, psycopg's row building) and the database its own CPU, which the table shows. On this "
            "machine the controllers and the database share the same few cores, so compare the per-alert CPU, "
            "not the alerts/s, when planning: on nodes of their own, N replicas sustain about N × (cores per "
            "replica ÷ controller CPU per alert) until the database's CPU per alert × rate fills its cores. Start "
            "with 2 replicas (availability), or 3 with `podDisruptionBudget.minAvailable: 2`; add one per ~70% of a "
            "replica's measured rate at the peak you must take without 503s (docs/operations.md, High "
            "availability); give the database at least as many cores as two replicas."
        ),
        "",
    ]
    return lines


def render(results: dict[str, Any], out_path: Path, plots_dir: Path | None) -> str:
    env = results.get("environment", {})
    hw = env.get("hardware", {})
    v = env.get("versions", {})
    sections = results.get("sections", {})
    rel = os.path.relpath(plots_dir, out_path.parent) if plots_dir else "."
    mode = results["mode"]
    lines = [
        "# Benchmarks",
        "",
        (
            f"Generated by `{results['command']}` on {results['date']} ({mode['name']} mode, {_f(results['duration_s'] / 60)} min). "
            "Re-run with `make bench` (quick mode: 10 s load phases, a few hundred alerts per selector; meant to take "
            "about 10 minutes) or `make bench BENCH=full` (60 s load phases, every held-out alert); the machine-readable "
            "results are in "
            f"`{results.get('json_path', 'bench/results/latest.json')}`. These machines are shared and noisy: compare ratios "
            "to the baselines measured in the same run, and medians and p99, not single absolute times."
        ),
        "",
        "## Machine",
        "",
    ]
    git = env.get("git", {})
    rows = [
        ["CPU", f"{hw.get('cpu_model')} ({hw.get('machine')})"],
        ["cores", hw.get("cores")],
        ["RAM", f"{_f(hw.get('ram_gb'))} GB"],
        ["kernel", hw.get("kernel")],
        ["python", v.get("python")],
        ["torch", f"{v.get('torch')} (default threads {v.get('torch_threads_default')})"],
        ["kube (test control plane)", v.get("kube")],
        [
            "trm-sre",
            f"{v.get('trm_sre')} at {git.get('commit', '?')}{' (uncommitted changes)' if git.get('dirty') else ''}",
        ],
        [
            "fastapi / uvicorn / pydantic / kopf",
            f"{v.get('fastapi')} / {v.get('uvicorn')} / {v.get('pydantic')} / {v.get('kopf')}",
        ],
        ["load average at start → end", f"{env.get('load_average_at_start')} → {results.get('load_average_at_end')}"],
    ]
    lines += _table(["", ""], rows)
    lines += ["", "## Targets", ""]
    rows = [
        [t["target"], t["measured"], "**met**" if t["met"] else ("**missed**" if t["met"] is False else "not measured")]
        for t in results.get("targets", [])
    ]
    lines += _table(["target (issue #14; 2 cores, CPU only)", "measured", ""], rows)
    lines.append("")
    lines += _ratios(sections)
    if ANALYSIS.is_file():
        lines += [ANALYSIS.read_text().strip(), ""]
    if "selection" in sections:
        lines += _selection(sections["selection"], rel)
    if "e2e" in sections:
        lines += _e2e(sections["e2e"], rel)
    if "peers" in sections:
        lines += _peers(sections["peers"])
    if "saturation" in sections:
        lines += _saturation(sections["saturation"], rel)
    if "scale" in sections:
        lines += _scale(sections["scale"], rel)
    if "coldstart" in sections:
        lines += _coldstart(sections["coldstart"])
    if "runtimes" in sections and "error" not in sections["runtimes"]:
        from bench.runtimes import render as _runtimes

        lines += _runtimes(sections["runtimes"])
    if "profile" in sections:
        lines += _profile(sections["profile"])
    if "tracing" in sections:
        lines += _tracing(sections["tracing"])
    if "replicas" in sections:
        lines += _replicas(sections["replicas"])
    took = ", ".join(f"{name} {_f(s.get('section_seconds'))} s" for name, s in sections.items())
    lines += [
        "## How this was measured",
        "",
        f"Sections ran one after another, each in its own process ({took}). Mode settings: "
        + ", ".join(f"{k} = {v}" for k, v in mode.items() if k != "name")
        + ".",
        "",
    ]
    return "\n".join(lines).rstrip() + "\n"
