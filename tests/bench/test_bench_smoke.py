"""A smoke run of the benchmark harness: it runs end to end and writes what BENCHMARKS.md promises.

No timing is asserted here (these machines are shared and noisy; the numbers
belong in BENCHMARKS.md, not in a pass/fail). What is checked: the harness
completes, the JSON and the Markdown have their shape, the end-to-end run
accounts for every alert it sent and loses none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.report import targets

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    out_dir = tmp_path_factory.mktemp("bench-smoke")
    out = out_dir / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--sections",
            "selection,e2e",
            "--out",
            str(out),
            "--workdir",
            str(out_dir / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**_env(), "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, f"bench failed ({done.returncode}):\n{done.stderr[-4000:]}"
    results = json.loads(out.with_suffix(".json").read_text())
    return results, out.read_text(), out_dir


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("K_SINK", "K_CE_OVERRIDES", "TRM_SRE_WEBHOOK_TOKEN")}


def test_the_json_says_what_ran_where(smoke: tuple[dict[str, Any], str, Path]) -> None:
    results, _, _ = smoke
    assert results["schema"] == "trm-sre-bench/1"
    assert results["mode"]["name"] == "smoke"
    assert results["command"].startswith("python -m bench --smoke")
    hardware, versions = results["environment"]["hardware"], results["environment"]["versions"]
    assert hardware["cpu_model"] and hardware["cores"] >= 1 and hardware["ram_gb"] > 0
    for key in ("python", "torch", "kube"):
        assert versions[key]
    assert set(results["sections"]) == {"selection", "e2e"}
    for name, section in results["sections"].items():
        assert "error" not in section, f"{name}: {section.get('error')}"
    ids = [t["id"] for t in results["targets"]]
    # The same target rows as a run that measured nothing (tests/bench/test_bench_peers.py checks each row).
    assert ids == [t["id"] for t in targets({"sections": {}})]
    for target in results["targets"]:
        assert target["met"] in (True, False, None) and target["measured"]


def test_selection_times_every_selector_on_the_same_alerts(smoke: tuple[dict[str, Any], str, Path]) -> None:
    selection = smoke[0]["sections"]["selection"]
    assert selection["alerts"] == 20
    rows = {r["selector"]: r for r in selection["selectors"]}
    assert {"rules", "static annotation", "function calling (fake Ollama)"} <= set(rows)
    assert rows["rules"]["ratio_p50_to_rules"] == 1.0
    for row in rows.values():
        if "unavailable" in row:  # a model without a checkpoint is reported, not skipped silently
            assert row["unavailable"]
            continue
        assert row["latency_ms"]["n"] == 20 or row["decisions_per_call"] > 1
        assert row["latency_ms"]["p50"] is not None and row["latency_ms"]["p99"] >= row["latency_ms"]["p50"]
    if selection["trm_available"]:
        assert "TRM, batch 1" in rows and "trm_sweeps" in selection
        assert [p["steps"] for p in selection["trm_sweeps"]["forced_steps"]] == [1, 2]


def test_end_to_end_accounts_for_every_alert_and_loses_none(smoke: tuple[dict[str, Any], str, Path]) -> None:
    e2e = smoke[0]["sections"]["e2e"]
    phases = {p["phase"]: p for p in e2e["phases"]}
    assert set(phases) == {"rate5", "storm"}
    assert phases["rate5"]["alerts"] == 10 and phases["storm"]["alerts"] == 20
    for phase in phases.values():
        assert phase["accepted"] > 0
        assert phase["accepted"] + phase["rejected_503"] + phase["failed_other"] == phase["alerts"]
        assert phase["lost"] == 0 and phase["untriggered_after_wait"] == 0, phase
        assert phase["triggered"] == phase["accepted"]
        assert phase["duplicate_triggers"] == 0
        assert phase["webhook_to_sink_ms"]["n"] == phase["triggered"]
        assert phase["controller"]["rss_mb_max"] > 0
    assert e2e["warmup_lost"] == 0
    assert e2e["controller_exit_code"] == 0


def test_the_markdown_has_a_table_per_section_and_the_command(smoke: tuple[dict[str, Any], str, Path]) -> None:
    results, markdown, out_dir = smoke
    for heading in (
        "# Benchmarks",
        "## Machine",
        "## Targets",
        "## 1. Selection",
        "## 2. End to end",
        "## How this was measured",
    ):
        assert heading + "\n" in markdown
    assert results["command"] in markdown
    assert "| selector | p50 ms | p99 ms |" in markdown
    assert "| phase | offered alerts/s | accepted |" in markdown
    assert results["environment"]["hardware"]["cpu_model"] in markdown
    plot = out_dir / "bench-e2e.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](bench-e2e.png)" in markdown or "](./bench-e2e.png)" in markdown


def test_the_replicas_section_measures_every_configuration_and_loses_nothing(tmp_path: Path) -> None:
    """1, 2 and 3 controllers on PostgreSQL next to one on SQLite: every alert triggered once, ratios present."""
    out = tmp_path / "replicas.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.section",
            "replicas",
            "--mode",
            "smoke",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**_env(), "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, f"the replicas section failed ({done.returncode}):\n{done.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert set(result["configs"]) == {"sqlite-1", "postgresql-1", "postgresql-2", "postgresql-3"}
    for name, config in result["configs"].items():
        assert (config["accepted"], config["triggered"], config["lost"]) == (result["alerts"],) * 2 + (0,), name
        assert config["duplicate_deliveries"] == 0, name
        assert config["alerts_per_s"] > 0
    assert result["configs"]["postgresql-1"]["cpu_s_database"] > 0
    assert result["ratios"]["sqlite-1"]["throughput_to_sqlite_1"] == 1.0
    from bench.report import _replicas

    text = "\n".join(_replicas(result))
    assert "How to size replicas" in text and "postgresql-3" in text
