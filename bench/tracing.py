"""Section 6, tracing: the end-to-end path with OpenTelemetry tracing off, on, and on with the collector down.

The same load as section 2 (`bench.e2e.run_phase`: the load generator POSTs
Alertmanager webhooks, the capture sink times each trigger's arrival) against
three controllers, one after another, each a fresh process with a fresh
store: tracing off (no OTEL_* variables), tracing on (every span exported
over OTLP/HTTP to a real OpenTelemetry Collector on loopback, built by
tests/envtest/build.sh otelcol, writing JSON to a file), and tracing on with
nothing listening at the OTLP endpoint (every export fails; spans are
dropped). Ratios are on / off; nothing is asserted.
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
from bench.procs import ControllerProcess, child_env, controller_argv
from bench.sink import TriggerSink
from bench.stats import ratio

_OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


def _rates(mode: Mode) -> list[int]:
    return [r for r in mode.rates if r <= 100] or list(mode.rates[:1])


def _configs(workdir: Path) -> tuple[list[tuple[str, dict[str, str | None]]], Any]:
    """(name, environment) per configuration, and the collector to stop afterwards (None if it is unavailable)."""
    from tests.envtest.controlplane import free_port
    from tests.envtest.otelcol import start_collector

    off: dict[str, str | None] = dict.fromkeys(_OTEL_VARIABLES)
    configs: list[tuple[str, dict[str, str | None]]] = [("off", off)]
    collector = None
    try:
        collector = start_collector(workdir / "otelcol")
    except Exception as exc:  # noqa: BLE001 - no Go toolchain: measure what can be measured, say why not
        print(f"tracing bench: no collector ({exc}); the 'on' configuration is skipped", file=sys.stderr)
    if collector is not None:
        configs.append(("on", {**off, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint}))
    configs.append(("collector_down", {**off, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}))
    return configs, collector


def _summary(phase: dict[str, Any]) -> dict[str, Any]:
    c = phase["controller"]
    return {
        "accepted": phase["accepted"],
        "triggered": phase["triggered"],
        "lost": phase["lost"],
        "rejected_503": phase["rejected_503"],
        "webhook_to_sink_ms": phase["webhook_to_sink_ms"],
        "post_to_2xx_ms": phase["post_to_2xx_ms"],
        "cpu_percent_of_one_core": c.get("cpu_percent_of_one_core"),
        "rss_mb_max": c.get("rss_mb_max"),
    }


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    options = options or Options()
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-tracing-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = f"tracing-{int(time.time())}"
    results: dict[str, Any] = {"mode": mode.name, "model": mode.e2e_model, "rates": _rates(mode), "configs": {}}
    configs, collector = _configs(workdir)
    try:
        for name, env in configs:
            ctl = ControllerProcess(
                controller_argv(
                    workdir / f"state-{name}",
                    policies=BENCH_POLICY,
                    model=mode.e2e_model,
                    extra=["--checkpoint", options.checkpoint] if options.checkpoint and mode.e2e_model else None,
                ),
                child_env(**env),
                workdir / f"controller-{name}.log",
            )
            with TriggerSink() as sink:
                ctl.env["K_SINK"] = sink.url
                ctl.start()
                try:
                    ctl.wait_ready()
                    run_phase(ctl, sink, Phase("warmup", 5, 1.0, drain_wait_s=30), f"{run_id}-{name}", workdir)
                    phases = {}
                    for rate in results["rates"]:
                        phase = Phase(f"rate{rate}", rate, mode.phase_seconds, drain_wait_s=mode.drain_wait_s)
                        outcome = run_phase(ctl, sink, phase, f"{run_id}-{name}", workdir)
                        outcome.pop("_untriggered", None)
                        phases[phase.name] = _summary(outcome)
                        print(json.dumps({"config": name, "phase": phase.name, **phases[phase.name]}), file=sys.stderr)
                finally:
                    code = ctl.stop()
            results["configs"][name] = {"phases": phases, "exit_code": code}
        if collector is not None:
            results["spans_exported"] = len(collector.spans())
    finally:
        if collector is not None:
            collector.stop()
    off = results["configs"].get("off", {}).get("phases", {})
    ratios: dict[str, Any] = {}
    for name, config in results["configs"].items():
        if name == "off":
            continue
        for phase_name, phase in config["phases"].items():
            base = off.get(phase_name)
            if base is None:
                continue
            ratios[f"{name}/{phase_name}"] = {
                "p50_webhook_to_sink": ratio(phase["webhook_to_sink_ms"]["p50"], base["webhook_to_sink_ms"]["p50"]),
                "p99_webhook_to_sink": ratio(phase["webhook_to_sink_ms"]["p99"], base["webhook_to_sink_ms"]["p99"]),
                "p50_post_to_2xx": ratio(phase["post_to_2xx_ms"]["p50"], base["post_to_2xx_ms"]["p50"]),
                "cpu": ratio(phase["cpu_percent_of_one_core"], base["cpu_percent_of_one_core"]),
            }
    results["ratios_to_off"] = ratios
    return results
