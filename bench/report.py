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


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue #5 with what was measured and whether it was met (None: not measured)."""
    sections = results.get("sections", {})
    e2e = {p["phase"]: p for p in sections.get("e2e", {}).get("phases", [])}
    out: list[dict[str, Any]] = []

    p100 = e2e.get("rate100")
    if p100:
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
            f"p99 {_f(p99)} ms (p50 {_f(p100['webhook_to_sink_ms']['p50'])})"
            + (
                f" over the {p100['triggered']:,} triggered; {late:,} more not triggered within the wait"
                if late
                else ""
            )
            + f"; lost {p100['lost']}, 503 {p100['rejected_503']}, other failures {p100['failed_other']}"
        )
    else:
        met, measured = None, "not measured"
    out.append(
        {
            "id": "latency_100",
            "target": "webhook → sink p99 ≤ 50 ms at 100 alerts/s, no loss, no 503",
            "measured": measured,
            "met": met,
        }
    )

    p500 = e2e.get("rate500")
    if p500:
        share = p500["accepted_share"] or 0.0
        met = (
            share >= 0.95
            and p500["failed_other"] == 0
            and p500["lost"] == 0
            and p500["triggered_within_60s"] == p500["accepted"]
        )
        measured = (
            f"{_pct(share)} accepted ({p500['accepted']:,} of {p500['alerts']:,}), {p500['rejected_503']:,} × 503, "
            f"{p500['failed_other']} other failures; {p500['triggered_within_60s']:,} of {p500['accepted']:,} accepted "
            f"triggered within 60 s ({p500['queued_at_end'] if p500.get('queued_at_end') is not None else '?'} "
            f"still queued in the store at the end); lost {p500['lost']}"
        )
    else:
        met, measured = None, "not measured"
    out.append(
        {
            "id": "burst_500",
            "target": "500 alerts/s for 10 s: ≥ 95% accepted (rest 503), every accepted alert "
            "triggered within 60 s, none lost",
            "measured": measured,
            "met": met,
        }
    )

    selectors = {r["selector"]: r for r in sections.get("selection", {}).get("selectors", [])}
    trm = selectors.get("TRM, batch 1")
    if trm and "latency_ms" in trm:
        lat = trm["latency_ms"]
        met = lat["p50"] <= 10 and lat["p99"] <= 30
        measured = f"p50 {_f(lat['p50'])} ms, p99 {_f(lat['p99'])} ms (n = {lat['n']})"
    else:
        met, measured = None, "TRM not available"
    out.append(
        {
            "id": "trm_latency",
            "target": "TRM p50 ≤ 10 ms and p99 ≤ 30 ms at batch 1 on one thread",
            "measured": measured,
            "met": met,
        }
    )

    ready = sections.get("coldstart", {}).get("readyz", {}).get("ms", {}).get("controller with the TRM")
    if ready and ready["n"]:
        met = ready["max"] <= 5000
        measured = f"median {_f(ready['p50'] / 1000)} s, slowest {_f(ready['max'] / 1000)} s of {ready['n']} starts"
    else:
        met, measured = None, "not measured"
    out.append(
        {
            "id": "readyz",
            "target": "/readyz within 5 s of process start (model loaded; every start)",
            "measured": measured,
            "met": met,
        }
    )

    if p100 and p100["controller"].get("rss_mb_max") is not None:
        rss = p100["controller"]["rss_mb_max"]
        met = rss < 500
        measured = f"{_f(rss)} MB peak RSS during the 100 alerts/s phase"
        if results.get("sections", {}).get("e2e", {}).get("rss_breakdown"):
            b = results["sections"]["e2e"]["rss_breakdown"]
            measured += f" ({_f(b.get('cuda_libraries_mb'))} MB of it CUDA libraries the CPU-only image does not load)"
    else:
        met, measured = None, "not measured"
    out.append({"id": "rss_100", "target": "RSS under 500 MB at 100 alerts/s", "measured": measured, "met": met})
    return out


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
            "about 5 minutes) or `make bench BENCH=full` (60 s load phases, every held-out alert); the machine-readable "
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
    lines += _table(["target (2 cores, CPU only)", "measured", ""], rows)
    lines.append("")
    if ANALYSIS.is_file():
        lines += [ANALYSIS.read_text().strip(), ""]
    if "selection" in sections:
        lines += _selection(sections["selection"], rel)
    if "e2e" in sections:
        lines += _e2e(sections["e2e"], rel)
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
