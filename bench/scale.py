"""Section 3, scale curves: how a decision's cost grows with policies, catalog size, labels, batch size.

Each point is the median (p50) of many timed calls (grouped so the clock's
own cost does not count), with p99 beside it; each curve's growth is
classified from the log-log slope over its upper half (see `stats.growth`),
and each has the reason, from the code, why it grows that way.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.alerts import HELD_OUT, crashloop_alert, load_rows, payload
from bench.modes import Mode, Options
from bench.stats import growth, summarize, time_calls

POLICY_COUNTS = (1, 3, 10, 30, 100, 300, 1000)
CATALOG_SIZES = (7, 14, 25, 50, 100)
LABEL_COUNTS = (4, 8, 16, 32, 64)


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> Any:
    from controller.schemas.policy import Policy, PolicySpec

    return Policy(namespace=namespace, name=name, generation=1, spec=PolicySpec.model_validate(spec))


def _spec(match: dict[str, Any], priority: int = 0) -> dict[str, Any]:
    return {
        "priority": priority,
        "match": match,
        "allowedFunctions": ["pod-restart"],
        "chain": [{"rules": [{"function": "pod-restart", "parameters": {"name": "{{ $labels.pod }}", "type": "pod"}}]}],
    }


def _event(labels: dict[str, str]) -> Any:
    from controller.tools.selectors import event_from_alert

    return event_from_alert({"labels": labels, "annotations": {}})


def policies_curve(seconds: float) -> dict[str, Any]:
    """PolicyIndex.matching for one alert, the index holding n policies of two kinds."""
    from controller.decision.chain import select_policy
    from controller.decision.policy_index import PolicyIndex

    event = _event({"alertname": "Alert7", "namespace": "ns-7", "severity": "warning", "pod": "p-1"})
    points = []
    for n in POLICY_COUNTS:
        named, unnamed = PolicyIndex(), PolicyIndex()
        for i in range(n):
            # Named: each policy lists its own alert names; only one bucket is ever looked at.
            named.upsert(
                _policy(
                    "bench",
                    f"named-{i}",
                    _spec(
                        {
                            "alertNames": [f"Alert{i}", f"Other{i}"],
                            "matchers": [{"label": "namespace", "op": "=~", "value": "ns-.*"}],
                        }
                    ),
                )
            )
            # Unnamed: label matchers only, so every one must be evaluated against every alert.
            unnamed.upsert(
                _policy(
                    "bench",
                    f"unnamed-{i}",
                    _spec(
                        {
                            "matchers": [
                                {"label": "namespace", "op": "=~", "value": f"ns-{i}|ns-x.*"},
                                {"label": "severity", "op": "!=", "value": "none"},
                            ]
                        }
                    ),
                )
            )
        named.matching(event)
        unnamed.matching(event)

        def rebuild(index: PolicyIndex = unnamed, n: int = n) -> None:
            # A change (one policy edited) followed by the next alert: the snapshot is rebuilt once.
            index.upsert(
                _policy(
                    "bench",
                    "unnamed-0",
                    _spec(
                        {
                            "matchers": [
                                {"label": "namespace", "op": "=~", "value": f"ns-0|ns-x.*{time.perf_counter_ns() % 7}"}
                            ]
                        }
                    ),
                )
            )
            index.matching(event)

        points.append(
            {
                "n": n,
                "named (alertNames)": summarize(
                    time_calls(lambda index=named: index.matching(event), min_seconds=seconds)
                ),
                "unnamed (label matchers)": summarize(
                    time_calls(lambda index=unnamed: index.matching(event), min_seconds=seconds)
                ),
                "select_policy, unnamed": summarize(
                    time_calls(lambda index=unnamed: select_policy(event, index), min_seconds=seconds)
                ),
                "change + next match (rebuild)": summarize(time_calls(rebuild, min_seconds=seconds, min_calls=3)),
            }
        )
    series = [
        "named (alertNames)",
        "unnamed (label matchers)",
        "select_policy, unnamed",
        "change + next match (rebuild)",
    ]
    return {
        "name": "policies",
        "title": "PolicyIndex.matching by number of policies",
        "x": "policies in the index",
        "series": series,
        "points": points,
        "growth": {s: growth([p["n"] for p in points], [p[s]["p50"] for p in points]) for s in series},
        "why": {
            "named (alertNames)": "policies that list alertNames sit in a dict keyed by alert name: an alert looks up one "
            "bucket, so the others cost nothing",
            "unnamed (label matchers)": "a policy without alertNames can match any alert, so each one's compiled matchers run "
            "for every alert: a linear scan (regexes are compiled once, at upsert)",
            "select_policy, unnamed": "select_policy is matching() plus taking the first: same growth",
            "change + next match (rebuild)": "after a change the first reader re-sorts every policy by precedence and rebuilds "
            "the buckets: O(n log n) once per change, not per alert",
        },
    }


def _catalog_of(n: int) -> Any:
    from runbooks import Catalog, default_catalog

    base = default_catalog()
    functions = list(base.functions)
    i = 0
    while len(functions) < n:
        source = base.functions[i % len(base.functions)]
        functions.append(source.model_copy(update={"name": f"{source.name}-x{i}"}))
        i += 1
    return Catalog(functions=tuple(sorted(functions, key=lambda r: r.name)))


def catalog_curve(seconds: float) -> dict[str, Any]:
    """Validation and tool-schema cost with 7 → 100 catalog functions (catalogs built in memory)."""
    from controller.decision import function_calling
    from controller.decision.validation import validate_proposal
    from runbooks import Catalog

    points = []
    for n in CATALOG_SIZES:
        catalog = _catalog_of(n)
        names = list(catalog.names)
        last = names[-1]  # the worst case for a lookup that scans the list
        runbook = catalog.get(last)
        params = {"name": "cart-1", "namespace": "shop"}
        params = {k: v for k, v in params.items() if runbook.parameter(k) is not None}
        if runbook.parameter("selector") is not None and "name" not in params:
            params["selector"] = "app=cart"
        if runbook.parameter("replicas") is not None:
            params["replicas"] = 2
        policy = _policy(
            "shop",
            "all",
            {**_spec({}), "allowedFunctions": names, "targetNamespaces": ["*"], "chain": [{"staticAnnotation": {}}]},
        )
        dump = catalog.model_dump(mode="json")

        def validate(catalog: Catalog = catalog, last: str = last, params: dict[str, Any] = params) -> None:
            catalog.validate_call(last, params)

        points.append(
            {
                "n": n,
                "validate_call": summarize(time_calls(validate, min_seconds=seconds)),
                "validate_proposal (policy allows all)": summarize(
                    time_calls(
                        lambda catalog=catalog, policy=policy, last=last, params=params: validate_proposal(
                            last, params, policy, catalog
                        ),
                        min_seconds=seconds,
                    )
                ),
                "tool schemas (function calling)": summarize(
                    time_calls(
                        lambda catalog=catalog, names=names: function_calling.build_tools(catalog, names),
                        min_seconds=seconds,
                    )
                ),
                "catalog load (validate the YAML models)": summarize(
                    time_calls(lambda dump=dump: Catalog.model_validate(dump), min_seconds=seconds, min_calls=3)
                ),
            }
        )
    series = [
        "validate_call",
        "validate_proposal (policy allows all)",
        "tool schemas (function calling)",
        "catalog load (validate the YAML models)",
    ]
    return {
        "name": "catalog",
        "title": "Catalog validation and tool schemas by number of functions",
        "x": "functions in the catalog",
        "series": series,
        "points": points,
        "growth": {s: growth([p["n"] for p in points], [p[s]["p50"] for p in points]) for s in series},
        "why": {
            "validate_call": "Catalog.get scans the function tuple for the name (and validate_call turns `allowed` into a set "
            "each call): linear, but the constant is one string compare per function, so it stays flat next to the parameter checks",
            "validate_proposal (policy allows all)": "validate_proposal looks the function up twice, checks `in` the policy's "
            "allowedFunctions tuple and builds a set of it once more: a few linear passes over n names",
            "tool schemas (function calling)": "the tools sent to the LLM are every allowed function's JSON schema, rebuilt for "
            "each decision: linear in the functions by construction (the output grows with n)",
            "catalog load (validate the YAML models)": "pydantic validates every runbook and parameter once, at start-up",
        },
    }


def labels_curve(seconds: float, trm: Any) -> dict[str, Any]:
    """Parsing, fingerprinting, matching, the rules stage and the model with 4 → 64 labels per alert."""
    from controller.decision.chain import StageClients, decide
    from controller.decision.policy_index import PolicyIndex
    from controller.defaults import load_default_policy
    from controller.schemas.alerts import (
        AlertmanagerPayload,
        label_fingerprint,
        split_payload,
    )
    from runbooks import default_catalog

    catalog = default_catalog()
    default = load_default_policy()
    index = PolicyIndex()
    for i in range(100):
        index.upsert(
            _policy(
                "bench",
                f"p{i}",
                _spec(
                    {
                        "matchers": [
                            {"label": f"extra_{i % 8}", "op": "=~", "value": "v.*"},
                            {"label": "namespace", "op": "=", "value": f"ns-{i}"},
                        ]
                    }
                ),
            )
        )
    index.upsert(default)
    loop = asyncio.new_event_loop()
    points = []
    try:
        for n in LABEL_COUNTS:
            extra = max(0, n - 7)
            alert = crashloop_alert("scale", "labels", n, "2026-01-01T00:00:00Z", extra_labels=extra)
            alert["labels"] = dict(list(alert["labels"].items())[:n])
            body = json.dumps(payload([alert], "labels"))
            event = split_payload(AlertmanagerPayload.model_validate_json(body))[0]
            labels = event.alert.labels

            def parse(body: str = body) -> None:
                split_payload(AlertmanagerPayload.model_validate(json.loads(body)))

            def rules(event: Any = event) -> None:
                loop.run_until_complete(decide(event, default, catalog, StageClients()))

            point: dict[str, Any] = {
                "n": len(labels),
                "parse payload (json + pydantic)": summarize(time_calls(parse, min_seconds=seconds)),
                "fingerprint": summarize(
                    time_calls(lambda labels=labels: label_fingerprint(labels), min_seconds=seconds)
                ),
                "match 100 policies": summarize(
                    time_calls(lambda event=event: index.matching(event), min_seconds=seconds)
                ),
                "default chain without model (decide)": summarize(time_calls(rules, min_seconds=seconds)),
            }
            if trm is not None:
                as_dict = event.as_alert_dict()
                point["TRM select (1 thread)"] = summarize(
                    time_calls(lambda a=as_dict: trm.select(a), min_seconds=seconds, min_calls=10)
                )
            points.append(point)
    finally:
        loop.close()
    series = [
        "parse payload (json + pydantic)",
        "fingerprint",
        "match 100 policies",
        "default chain without model (decide)",
    ]
    if trm is not None:
        series.append("TRM select (1 thread)")
    max_labels = trm.cfg.encoder.max_labels if trm is not None else None
    return {
        "name": "labels",
        "title": "Per-alert cost by labels per alert",
        "x": "labels per alert",
        "series": series,
        "points": points,
        "growth": {s: growth([p["n"] for p in points], [p[s]["p50"] for p in points if s in p]) for s in series},
        "why": {
            "parse payload (json + pydantic)": "every label is decoded and validated once: linear in the labels",
            "fingerprint": "FNV-1a over the sorted label names and values: O(n log n) sort, linear hashing",
            "match 100 policies": "each policy's matchers read a few named labels (dict lookups): independent of how many "
            "labels the alert has",
            "default chain without model (decide)": "rules read the labels they name; the trace and the as_alert_dict copy are "
            "linear in the labels but small",
            "TRM select (1 thread)": f"the encoder keeps at most {max_labels} label slots (priority labels first), so the "
            "sequence length, and the model's cost, stop growing there",
        },
        "model_max_label_slots": max_labels,
    }


def batch_curve(trm: Any, sizes: tuple[int, ...], seconds: float) -> dict[str, Any]:
    import torch

    alerts = [r["alert"] for r in load_rows(HELD_OUT, max(sizes))]
    while len(alerts) < max(sizes):
        alerts += alerts
    points: list[dict[str, Any]] = []
    for size in sizes:
        batch = alerts[:size]
        point: dict[str, Any] = {"n": size}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            samples = time_calls(lambda batch=batch: trm.select_batch(batch), min_seconds=seconds, min_calls=3)
            summary = summarize([s / size for s in samples])  # per decision
            summary["batch_ms_p50"] = summarize(samples)["p50"]
            summary["throughput_per_s"] = round(1000 / summary["p50"], 1) if summary["p50"] else None
            point[f"{threads} thread{'s' if threads > 1 else ''}"] = summary
        points.append(point)
    torch.set_num_threads(1)
    series = ["1 thread", "2 threads"]
    return {
        "name": "trm_batch",
        "title": "TRM cost per decision by batch size",
        "x": "batch size",
        "unit": "ms per decision (p50)",
        "series": series,
        "points": points,
        "growth": {s: growth([p["n"] for p in points], [p[s]["batch_ms_p50"] for p in points]) for s in series},
        "growth_of": "the whole batch call (per-decision cost is this divided by the batch size)",
        "why": {
            "1 thread": "a batch call pays the Python and per-op dispatch overhead of each recursion once for the whole "
            "batch, so the cost per decision falls while that overhead dominates (small batches); past that the "
            "matrix work, linear in the batch, dominates and the call grows linearly (a constant cost per decision)",
            "2 threads": "torch's intra-op pool splits each op over both cores; on a 2-core machine shared with anything "
            "else (here: other processes, and in the controller the event loop) its threads spin-wait on each other, "
            "which is why the controller loads the model with one thread",
        },
    }


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    import torch

    from models.selector import DEFAULT_CHECKPOINT_DIR, CheckpointError, TRMSelector

    options = options or Options()
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-scale-")) if workdir is None else workdir
    torch.set_num_threads(1)
    checkpoint = Path(options.checkpoint) if options.checkpoint else DEFAULT_CHECKPOINT_DIR
    try:
        trm: Any = TRMSelector.load(checkpoint)
        trm_error = None
    except (CheckpointError, OSError) as exc:
        trm, trm_error = None, str(exc)
    seconds = mode.scale_seconds_per_point
    curves = [policies_curve(seconds), catalog_curve(seconds), labels_curve(seconds, trm)]
    if trm is not None:
        curves.append(batch_curve(trm, mode.batch_sizes, seconds))
    result: dict[str, Any] = {"curves": curves, "trm_error": trm_error, "seconds_per_point": seconds}
    if options.plots_dir:
        from bench import plots

        result["plots"] = plots.scale_plots(result, Path(options.plots_dir))
    return result
