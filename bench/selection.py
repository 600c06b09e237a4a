"""Section 1, selection: what each way of choosing a remediation costs, and how often it is right.

All selectors see the same held-out alerts (models/datasets/test-heldout-names.jsonl:
alert names the model never saw in training). Latency is per decision, on
one thread (torch.set_num_threads(1)), after a warm-up; throughput is
decisions per second of that sequential loop (batched rows: per second of
batch calls). The baseline is the default policy's rules stage, timed in the
same loop: every other row is also given as a ratio to it.

The chain's stages are timed through `decide()` (what the pipeline runs: the
stage, the parser, validation, the trace); the model is also timed bare
(`TRMSelector.select`), so the stage's own overhead is visible.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.alerts import HELD_OUT, load_rows
from bench.modes import Mode, Options
from bench.procs import REPO, child_env, spawn, stop
from bench.stats import ratio, summarize

WARMUP = 10


# --------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------


def _exact(expected: dict[str, Any], function: str | None, parameters: dict[str, Any]) -> bool:
    from models.evaluate import is_exact

    return is_exact(expected, {"lambda_function": function, "parameters": parameters})


def _accuracy(
    expected: Sequence[dict[str, Any]], predicted: Sequence[tuple[str | None, dict[str, Any]]]
) -> dict[str, float]:
    n = len(expected)
    exact = sum(_exact(e, f, p) for e, (f, p) in zip(expected, predicted))
    fn = sum(e.get("lambda_function") == f for e, (f, _) in zip(expected, predicted))
    wrong = sum(f is not None and e.get("lambda_function") != f for e, (f, _) in zip(expected, predicted))
    return {
        "exact_match": round(exact / n, 4),
        "function_accuracy": round(fn / n, 4),
        "wrong_action_rate": round(wrong / n, 4),
    }


def _thresholded(decisions: Sequence[Any], threshold: float) -> list[tuple[str | None, dict[str, Any]]]:
    """The eval's convention: below the threshold, the model's call becomes an abstention."""
    return [
        (d.lambda_function, dict(d.parameters))
        if d.lambda_function is not None and d.confidence >= threshold
        else (None, {})
        for d in decisions
    ]


# --------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------


def _time_each(items: Sequence[Any], call: Callable[[Any], Any]) -> tuple[list[Any], list[float]]:
    for item in list(items[:WARMUP]):
        call(item)
    outputs, lat = [], []
    for item in items:
        t0 = time.perf_counter()
        outputs.append(call(item))
        lat.append((time.perf_counter() - t0) * 1000)
    return outputs, lat


async def _decide_each(events: Sequence[Any], policy: Any, catalog: Any, clients: Any) -> tuple[list[Any], list[float]]:
    from controller.decision.chain import decide

    for event in list(events[:WARMUP]):
        await decide(event, policy, catalog, clients)
    outputs, lat = [], []
    for event in events:
        t0 = time.perf_counter()
        outputs.append(await decide(event, policy, catalog, clients))
        lat.append((time.perf_counter() - t0) * 1000)
    return outputs, lat


def _row(
    name: str, what: str, lat: list[float], *, per_item: int = 1, accuracy: dict[str, Any] | None = None, note: str = ""
) -> dict[str, Any]:
    total_s = sum(lat) / 1000
    return {
        "selector": name,
        "what": what,
        "latency_ms": summarize(lat),
        "decisions_per_call": per_item,
        "throughput_per_s": round(len(lat) * per_item / total_s, 1) if total_s > 0 else None,
        "accuracy": accuracy,
        "note": note,
    }


def _decisions_as_calls(decisions: Sequence[Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [(d.function, dict(d.parameters)) if d.outcome == "trigger" else (None, {}) for d in decisions]


# --------------------------------------------------------------------------
# Model footprint (a fresh process per model, so RSS is the model's and not this harness's)
# --------------------------------------------------------------------------

_RSS_SNIPPET = """
import json, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
out = {'rss_mb_interpreter': rss()}
import torch
torch.set_num_threads(1)
out['rss_mb_after_import_torch'] = rss()
from models.selector import TRMSelector
sel = TRMSelector.load(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None)
sel.select({'labels': {'alertname': 'KubePodCrashLooping', 'pod': 'a-1', 'namespace': 'b'}, 'annotations': {}})
out['rss_mb_with_model_loaded'] = rss()
print(json.dumps(out))
"""


def footprint(checkpoint: Path | None) -> dict[str, Any]:
    argv = [sys.executable, "-c", _RSS_SNIPPET, str(checkpoint) if checkpoint else ""]
    done = subprocess.run(argv, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out = {k: round(v, 1) for k, v in out.items()}
    out["rss_mb_model_alone"] = round(out["rss_mb_with_model_loaded"] - out["rss_mb_after_import_torch"], 1)
    return out


def _checkpoint_mb(directory: Path) -> float:
    return round(sum(p.stat().st_size for p in directory.iterdir() if p.is_file()) / 1e6, 2)


# --------------------------------------------------------------------------
# The function-calling stage against a loopback fake Ollama
# --------------------------------------------------------------------------


def _start_fake_ollama(rows: Sequence[dict[str, Any]], workdir: Path) -> tuple[Any, str]:
    from controller.schemas.alerts import label_fingerprint

    answers = {}
    for row in rows:
        exp = row["expected"]
        call = None
        if exp.get("lambda_function"):
            call = {"name": exp["lambda_function"], "arguments": exp.get("parameters") or {}}
        answers[label_fingerprint(row["alert"]["labels"])] = call
    answers_path, port_file = workdir / "fake-ollama-answers.json", workdir / "fake-ollama.port"
    answers_path.write_text(json.dumps(answers))
    port_file.unlink(missing_ok=True)
    popen = spawn(
        [sys.executable, "-m", "bench.fake_ollama", "--answers", str(answers_path), "--port-file", str(port_file)],
        child_env(),
        workdir / "fake-ollama.log",
    )
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text().strip():
        if popen.poll() is not None or time.monotonic() > deadline:
            stop(popen)
            raise RuntimeError(f"the fake Ollama server did not start (see {workdir / 'fake-ollama.log'})")
        time.sleep(0.05)
    return popen, f"http://127.0.0.1:{port_file.read_text().strip()}"


async def _function_calling(
    events: Sequence[Any], policy: Any, catalog: Any
) -> tuple[list[Any], list[float], list[float]]:
    """The whole stage through decide(), and the bare HTTP exchange of the same request (the floor)."""
    import httpx

    from controller.decision import function_calling
    from controller.decision.chain import StageClients
    from controller.engine.llm_http import HttpChatTransport

    stage = policy.spec.chain[0].function_calling
    async with httpx.AsyncClient() as http:
        clients = StageClients(chat=HttpChatTransport(http))
        decisions, stage_lat = await _decide_each(events, policy, catalog, clients)
        tools = function_calling.build_tools(catalog, policy.spec.allowed_functions)
        raw_lat = []
        for event in list(events[:WARMUP]) + list(events):
            url, body = function_calling.build_request(stage, event, tools)
            payload = json.dumps(body).encode()
            t0 = time.perf_counter()
            response = await http.post(url, content=payload, headers={"Content-Type": "application/json"})
            response.read()
            raw_lat.append((time.perf_counter() - t0) * 1000)
        return decisions, stage_lat, raw_lat[WARMUP:]


# --------------------------------------------------------------------------
# TRM sweeps
# --------------------------------------------------------------------------


def _sweep_point(
    selector: Any,
    lat_alerts: Sequence[dict[str, Any]],
    acc_rows: Sequence[dict[str, Any]],
    run_one: Callable[[dict[str, Any]], Any],
    run_batch: Callable[[list[dict[str, Any]]], list[Any]],
) -> dict[str, Any]:
    _, lat = _time_each(lat_alerts, run_one)
    batched: list[Any] = []
    alerts = [r["alert"] for r in acc_rows]
    for start in range(0, len(alerts), 256):
        batched += run_batch(alerts[start : start + 256])
    threshold = selector.cfg.default_threshold
    acc = _accuracy([r["expected"] for r in acc_rows], _thresholded(batched, threshold))
    return {
        "latency_ms": summarize(lat),
        "accuracy": acc,
        "mean_steps": round(sum(d.steps for d in batched) / len(batched), 2),
    }


def trm_sweeps(selector: Any, mode: Mode) -> dict[str, Any]:
    """Cost (batch 1, one thread) and accuracy against supervision steps, recursion sizes and the halting threshold."""
    lat_alerts = [r["alert"] for r in load_rows(HELD_OUT, mode.sweep_latency_alerts)]
    acc_rows = load_rows(HELD_OUT, mode.sweep_accuracy_alerts)
    cfg = selector.cfg
    out: dict[str, Any] = {
        "trained": {
            "n_latent": cfg.n_latent,
            "t_recursions": cfg.t_recursions,
            "max_steps": cfg.max_steps,
            "halt_threshold": cfg.halt_threshold,
            "default_threshold": cfg.default_threshold,
        }
    }

    steps = []
    for k in range(1, mode.sweep_max_steps + 1):
        point = _sweep_point(
            selector,
            lat_alerts,
            acc_rows,
            lambda a, k=k: selector.select_batch_forced([a], steps=k)[0],
            lambda batch, k=k: selector.select_batch_forced(batch, steps=k),
        )
        steps.append({"steps": k, **point})
    out["forced_steps"] = steps

    saved = (cfg.n_latent, cfg.t_recursions)
    grid = []
    try:
        for n_latent, t_rec in mode.recursion_grid:
            cfg.n_latent, cfg.t_recursions = n_latent, t_rec
            point = _sweep_point(selector, lat_alerts, acc_rows, selector.select, selector.select_batch)
            grid.append(
                {
                    "n_latent": n_latent,
                    "t_recursions": t_rec,
                    "trained": (n_latent, t_rec) == saved,
                    "net_applications_per_step": t_rec * (n_latent + 1),
                    **point,
                }
            )
    finally:
        cfg.n_latent, cfg.t_recursions = saved
    out["recursion_sizes"] = grid

    saved_threshold = cfg.halt_threshold
    curve = []
    try:
        for threshold in mode.halt_thresholds:
            cfg.halt_threshold = threshold
            point = _sweep_point(selector, lat_alerts, acc_rows, selector.select, selector.select_batch)
            curve.append({"halt_threshold": threshold, "trained": threshold == saved_threshold, **point})
    finally:
        cfg.halt_threshold = saved_threshold
    out["halting_threshold"] = curve
    return out


# --------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------


def _load(checkpoint: Path | None) -> tuple[Any, str | None]:
    from models.selector import CheckpointError, TRMSelector

    try:
        return TRMSelector.load(checkpoint, catalog=None), None
    except (CheckpointError, OSError) as exc:
        return None, str(exc)


def _with_chain(policy: Any, stages: list[dict[str, Any]]) -> Any:
    from controller.schemas.policy import Policy, PolicySpec

    spec = policy.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    spec["chain"] = stages
    return Policy(namespace=policy.namespace, name=policy.name, generation=0, spec=PolicySpec.model_validate(spec))


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    import torch

    from controller.decision.chain import StageClients
    from controller.defaults import load_default_policy
    from controller.tools.selectors import event_from_alert
    from models.baselines import OriginalSubstringRules
    from models.selector import DEFAULT_CHECKPOINT_DIR
    from runbooks import default_catalog

    options = options or Options()
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-sel-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    catalog = default_catalog()
    rows = load_rows(HELD_OUT, mode.selection_alerts)
    alerts = [r["alert"] for r in rows]
    expected = [r["expected"] for r in rows]
    events = [event_from_alert(a) for a in alerts]
    default = load_default_policy()
    rules_stage = next(s for s in default.spec.chain if s.rules is not None)
    rules_policy = _with_chain(default, [rules_stage.model_dump(by_alias=True, exclude_none=True, mode="json")])
    static_policy = _with_chain(default, [{"staticAnnotation": {}}])
    trm_policy = _with_chain(default, [{"trm": {"minConfidence": 0.8, "maxSteps": 8, "timeoutMs": 250}}])

    checkpoint = Path(options.checkpoint) if options.checkpoint else DEFAULT_CHECKPOINT_DIR
    plain_dir = checkpoint.parent / "plain"
    trm, trm_error = _load(checkpoint)
    plain, plain_error = (
        _load(plain_dir) if plain_dir.is_dir() else (None, f"no plain-transformer checkpoint at {plain_dir}")
    )

    result: dict[str, Any] = {
        "dataset": str(HELD_OUT.relative_to(REPO)),
        "alerts": len(rows),
        "threads": 1,
        "checkpoint": str(checkpoint),
        "trm_available": trm is not None,
        "trm_error": trm_error,
        "plain_available": plain is not None,
        "plain_error": plain_error,
    }
    table: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    mark = time.monotonic()

    # Baseline: the default policy's rules stage through decide().
    decisions, lat = asyncio.run(_decide_each(events, rules_policy, catalog, StageClients()))
    table.append(
        _row(
            "rules",
            "default policy's rules stage, decide()",
            lat,
            accuracy=_accuracy(expected, _decisions_as_calls(decisions)),
            note="baseline",
        )
    )

    # Static annotation: each alert annotated with its expected call (what a rule author would write).
    annotated = []
    for row in rows:
        alert = json.loads(json.dumps(row["alert"]))
        call = row["expected"]
        if call.get("lambda_function"):
            alert.setdefault("annotations", {})["lambda_function"] = call["lambda_function"]
            alert["annotations"]["lambda_parameters"] = json.dumps(call.get("parameters") or {})
        annotated.append(event_from_alert(alert))
    decisions, lat = asyncio.run(_decide_each(annotated, static_policy, catalog, StageClients()))
    table.append(
        _row(
            "static annotation",
            "staticAnnotation stage, decide(); alerts annotated with their expected call",
            lat,
            note="accuracy not meaningful: the annotation is the answer",
        )
    )

    original = OriginalSubstringRules(catalog)
    outputs, lat = _time_each(alerts, original.select_one)
    table.append(
        _row(
            "original substring rules",
            "the replaced system's rules (models/baselines.py)",
            lat,
            accuracy=_accuracy(expected, [(d.lambda_function, d.parameters) for d in outputs]),
        )
    )

    timings["rules, static, original"] = time.monotonic() - mark
    mark = time.monotonic()
    if trm is not None:
        threshold = trm.cfg.default_threshold
        outputs, lat = _time_each(alerts, trm.select)
        table.append(
            _row(
                "TRM, batch 1",
                "TRMSelector.select, one thread (encode, recurse with halting, decode, validate)",
                lat,
                accuracy=_accuracy(expected, _thresholded(outputs, threshold)),
                note=f"accuracy at the model's default threshold {threshold}",
            )
        )
        decisions, lat = asyncio.run(_decide_each(events, trm_policy, catalog, StageClients(trm=trm)))
        table.append(
            _row(
                "TRM stage",
                "trm stage alone through decide() (thread hop, parser, validation; minConfidence 0.8)",
                lat,
                accuracy=_accuracy(expected, _decisions_as_calls(decisions)),
                note="below minConfidence 0.8 the stage hands over (counted as no action here)",
            )
        )
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in (32, 256):
                size = min(batch, len(alerts))
                chunks = [alerts[i : i + size] for i in range(0, len(alerts) - size + 1, size)]
                trm.select_batch(chunks[0])
                batch_lat = []
                for _ in range(-(-3 // len(chunks))):  # at least 3 batch calls
                    for chunk in chunks:
                        t0 = time.perf_counter()
                        trm.select_batch(chunk)
                        batch_lat.append((time.perf_counter() - t0) * 1000)
                table.append(
                    _row(
                        f"TRM, batch {size}, {threads} thread{'s' if threads > 1 else ''}",
                        "TRMSelector.select_batch; latency is per batch call",
                        batch_lat,
                        per_item=size,
                    )
                )
        timings["trm rows"] = time.monotonic() - mark
        mark = time.monotonic()
        torch.set_num_threads(1)
        decisions, lat = asyncio.run(_decide_each(events, default, catalog, StageClients(trm=trm)))
        table.append(
            _row(
                "default chain",
                "default policy: staticAnnotation → trm → rules, decide()",
                lat,
                accuracy=_accuracy(expected, _decisions_as_calls(decisions)),
            )
        )
    else:
        table.append({"selector": "TRM", "unavailable": trm_error})

    if plain is not None:
        threshold = plain.cfg.default_threshold
        outputs, lat = _time_each(alerts, plain.select)
        table.append(
            _row(
                "plain transformer, batch 1",
                "same-size non-recursive baseline (models/checkpoints/plain), one thread",
                lat,
                accuracy=_accuracy(expected, _thresholded(outputs, threshold)),
            )
        )
    else:
        table.append({"selector": "plain transformer", "unavailable": plain_error})

    timings["default chain, plain"] = time.monotonic() - mark
    mark = time.monotonic()
    popen, endpoint = _start_fake_ollama(rows, workdir)
    try:
        fc_policy = _with_chain(
            default, [{"functionCalling": {"endpoint": endpoint, "api": "ollama", "model": "fake", "timeoutMs": 5000}}]
        )
        decisions, stage_lat, raw_lat = asyncio.run(_function_calling(events, fc_policy, catalog))
    finally:
        stop(popen, 10)
    stage_row = _row(
        "function calling (fake Ollama)",
        "functionCalling stage through decide() against a loopback fake /api/chat",
        stage_lat,
        accuracy=_accuracy(expected, _decisions_as_calls(decisions)),
        note="accuracy is the fake server's (it answers the expected call): shows only that replies validate",
    )
    raw = summarize(raw_lat)
    stage_row["bare_http_exchange_ms"] = raw
    stage_row["client_overhead_ms_p50"] = round(stage_row["latency_ms"]["p50"] - raw["p50"], 3)
    table.append(stage_row)

    timings["function calling"] = time.monotonic() - mark
    mark = time.monotonic()
    base = table[0]["latency_ms"]
    for row in table:
        if "latency_ms" in row:
            row["ratio_p50_to_rules"] = ratio(row["latency_ms"]["p50"] / row["decisions_per_call"], base["p50"])
    result["selectors"] = table

    models: dict[str, Any] = {}
    for name, sel, directory in (("trm", trm, checkpoint), ("plain", plain, plain_dir)):
        if sel is None:
            continue
        models[name] = {
            "parameters": sel.info["parameters"],
            "checkpoint_mb": _checkpoint_mb(directory),
            "recursive": sel.cfg.recursive,
            "d_model": sel.cfg.d_model,
            "n_layers": sel.cfg.n_layers,
            **(footprint(directory) if mode.footprint else {}),
        }
    result["models"] = models
    timings["footprint"] = time.monotonic() - mark
    mark = time.monotonic()

    if trm is not None:
        torch.set_num_threads(1)
        result["trm_sweeps"] = trm_sweeps(trm, mode)
        timings["sweeps"] = time.monotonic() - mark
        if options.plots_dir:
            from bench import plots

            result["plots"] = plots.selection_plots(result, Path(options.plots_dir))
    result["part_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return result
