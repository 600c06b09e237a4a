"""PNG plots for BENCHMARKS.md, where a curve says more than a table (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path.name


def selection_plots(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    plt = _pyplot()
    sweeps = result["trm_sweeps"]
    made: dict[str, str] = {}

    curve = sweeps["halting_threshold"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [p["latency_ms"]["p50"] for p in curve]
    x99 = [p["latency_ms"]["p99"] for p in curve]
    ys = [100 * p["accuracy"]["exact_match"] for p in curve]
    ax.plot(xs, ys, "o-", label="p50 latency")
    ax.plot(x99, ys, "x--", alpha=0.6, label="p99 latency")
    for p, x, y in zip(curve, xs, ys):
        label = "never" if p["halt_threshold"] > 1 else f"{p['halt_threshold']:g}"
        ax.annotate(
            label + (" (trained)" if p["trained"] else ""),
            (x, y),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=8,
        )
    ax.set_xlabel("TRM latency per decision, batch 1, one thread (ms)")
    ax.set_ylabel("exact match (%)")
    ax.set_title("Accuracy against latency as the halting threshold moves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    made["threshold"] = _save(fig, out_dir / "bench-trm-halting.png")

    steps = sweeps["forced_steps"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ks = [p["steps"] for p in steps]
    ax.plot(ks, [p["latency_ms"]["p50"] for p in steps], "o-", label="p50 latency")
    ax.plot(ks, [p["latency_ms"]["p99"] for p in steps], "x--", label="p99 latency")
    ax.set_xlabel("supervision steps (forced, no early halting)")
    ax.set_ylabel("ms per decision, batch 1, one thread")
    ax2 = ax.twinx()
    ax2.plot(ks, [100 * p["accuracy"]["exact_match"] for p in steps], "s:", color="tab:green", label="exact match")
    ax2.set_ylabel("exact match (%)")
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    ax.set_title("TRM cost and accuracy by supervision steps")
    made["steps"] = _save(fig, out_dir / "bench-trm-steps.png")
    return made


def scale_plots(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    plt = _pyplot()
    made: dict[str, str] = {}
    curves = [c for c in result["curves"] if c.get("points")]
    cols = 2
    rows = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.4 * rows))
    flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
    for ax, curve in zip(flat, curves):
        for series in curve["series"]:
            pts = [(p["n"], p[series]["p50"]) for p in curve["points"] if p.get(series) and p[series]["p50"]]
            if pts:
                ax.plot([n for n, _ in pts], [v for _, v in pts], "o-", label=series)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(curve["x"])
        ax.set_ylabel(curve.get("unit", "ms (p50)"))
        ax.set_title(curve["title"], fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in flat[len(curves) :]:
        ax.axis("off")
    made["scale"] = _save(fig, out_dir / "bench-scale.png")

    batch = next((c for c in result["curves"] if c["name"] == "trm_batch"), None)
    if batch and batch.get("points"):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for series in batch["series"]:
            pts = [(p["n"], p[series]["throughput_per_s"]) for p in batch["points"] if p.get(series)]
            ax.plot([n for n, _ in pts], [v for _, v in pts], "o-", label=series)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("decisions per second")
        ax.set_title("TRM throughput by batch size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        made["batch"] = _save(fig, out_dir / "bench-trm-batch.png")
    return made


def e2e_plot(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Latency distribution (webhook → sink) per phase, from the stored percentiles."""
    plt = _pyplot()
    phases = [p for p in result.get("phases", []) if p["webhook_to_sink_ms"]["n"]]
    if not phases:
        return {}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = [p["phase"] for p in phases]
    for key, marker in (("p50", "o"), ("p90", "^"), ("p99", "x")):
        ax.plot(names, [p["webhook_to_sink_ms"][key] for p in phases], marker + "-", label=key)
    ax.set_yscale("log")
    ax.set_ylabel("webhook → sink latency (ms)")
    ax.set_title("End to end latency by load phase")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return {"e2e": _save(fig, out_dir / "bench-e2e.png")}


def saturation_plot(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Accepted and triggered per second, and p50 / p99 webhook → sink, against the offered rate, per stack."""
    plt = _pyplot()
    curves = {s: [p for p in c if "error" not in p] for s, c in result.get("curves", {}).items()}
    if not any(curves.values()):
        return {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    top = max(p["offered_per_s"] for c in curves.values() for p in c)
    left.plot([0, top], [0, top], ":", color="grey", label="offered")
    colors = {"trm-sre": "tab:blue", "floor": "tab:orange"}
    for stack, points in curves.items():
        xs = [p["offered_per_s"] for p in points]
        color = colors.get(stack)
        left.plot(xs, [p["accepted_per_s"] for p in points], "o--", color=color, alpha=0.6, label=f"{stack} accepted")
        left.plot(xs, [p["triggered_per_s"] or 0 for p in points], "s-", color=color, label=f"{stack} triggered")
        right.plot(xs, [p["p50_ms"] for p in points], "o--", color=color, alpha=0.6, label=f"{stack} p50")
        right.plot(xs, [p["p99_ms"] for p in points], "x-", color=color, label=f"{stack} p99 (triggered)")
    left.axhline(300, color="tab:green", lw=0.8, label="target: 300 triggers/s")
    left.set_xlabel("offered alerts/s (open loop)")
    left.set_ylabel("alerts/s")
    left.set_title("Accepted and triggered per second")
    right.axhline(1000, color="tab:green", lw=0.8, label="target: p99 1 s")
    right.set_yscale("log")
    right.set_xlabel("offered alerts/s (open loop)")
    right.set_ylabel("webhook → sink (ms)")
    right.set_title("Latency (alerts triggered within the wait)")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return {"saturation": _save(fig, out_dir / "bench-saturation.png")}
