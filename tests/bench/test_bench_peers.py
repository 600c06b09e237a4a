"""The side-by-side benchmark (issue #14): the floor receiver, the peer, the saturation curve and the targets.

Real processes on loopback and the bench's own capture sink; no timing is
asserted (the numbers belong in BENCHMARKS.md): what is checked is what each
receiver does with an alert, that the sections account for every alert, and
that the report turns a run's results into the issue's target rows.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.alerts import crashloop_alert, payload
from bench.amexecutor import AmExecutorProcess, binary
from bench.coldstart import _free_port
from bench.floor import open_store
from bench.peers import compare, floor_process
from bench.procs import child_env
from bench.report import _ratios, render, targets
from bench.sink import Arrival, TriggerSink

REPO = Path(__file__).resolve().parents[2]
TRIGGER = "io.homelab.agent-sre.lambda.trigger"


def _post(url: str, alerts: list[dict[str, Any]]) -> int:
    body = json.dumps(payload(alerts, "test")).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def _wait_for(sink: TriggerSink, count: int, seconds: float = 30.0) -> list[Arrival]:
    deadline = time.monotonic() + seconds
    while sink.count() < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return sink.arrivals()


def _alerts(run: str, n: int) -> list[dict[str, Any]]:
    return [crashloop_alert(run, "test", i, "2026-01-01T00:00:00Z") for i in range(n)]


def test_the_floor_store_is_as_durable_as_the_controllers(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "floor.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync on every commit


def test_the_floor_stores_every_alert_before_its_2xx_then_forwards_one_cloudevent_each(tmp_path: Path) -> None:
    alerts = _alerts("floor", 3)
    with TriggerSink() as sink:
        floor = floor_process(tmp_path, sink)
        floor.start()
        try:
            floor.wait_ready()
            assert _post(floor.webhook_url, alerts) == 200
            # The 2xx came after the commit: every alert is on disk now, whatever the sink has seen.
            db = sqlite3.connect(f"file:{tmp_path / 'floor-state' / 'floor.db'}?mode=ro", uri=True)
            try:
                stored = [row[0] for row in db.execute("SELECT fingerprint FROM alerts ORDER BY id")]
            finally:
                db.close()
            arrivals = _wait_for(sink, len(alerts))
        finally:
            floor.stop()
    assert stored == [a["fingerprint"] for a in alerts]
    assert sorted(a.fingerprint or "" for a in arrivals) == sorted(a["fingerprint"] for a in alerts)
    assert {a.ce_type for a in arrivals} == {TRIGGER}
    assert len({a.ce_id for a in arrivals}) == len(alerts)


def test_the_peer_posts_one_cloudevent_per_alert_to_the_sink(tmp_path: Path) -> None:
    path, why = binary()
    assert path is not None, why
    alerts = _alerts("peer", 2)
    with TriggerSink() as sink:
        peer = AmExecutorProcess(path, sink.url, tmp_path, _free_port())
        peer.start()
        try:
            peer.wait_ready()
            # One alert per webhook, as the bench sends them: am-executor runs its command once per webhook.
            assert [_post(peer.webhook_url, [alert]) for alert in alerts] == [200, 200]
            arrivals = _wait_for(sink, len(alerts))
        finally:
            peer.stop()
    assert sorted(a.fingerprint or "" for a in arrivals) == sorted(a["fingerprint"] for a in alerts)
    assert {a.ce_type for a in arrivals} == {TRIGGER}


# --------------------------------------------------------------------------
# The report, from a small synthetic run
# --------------------------------------------------------------------------


def _phase(name: str, *, p50: float, p99: float, alerts: int, accepted: int, tps: float, cpu: float) -> dict:
    return {
        "phase": name,
        "alerts": alerts,
        "accepted": accepted,
        "accepted_share": accepted / alerts,
        "rejected_503": alerts - accepted,
        "failed_other": 0,
        "lost": 0,
        "untriggered_after_wait": 0,
        "queued_at_end": 0,
        "triggered": accepted,
        "triggered_within_60s": accepted,
        "send_window_s": 10.0,
        "webhook_to_sink_ms": {"p50": p50, "p99": p99, "n": accepted},
        "trigger_throughput_per_s": tps,
        "controller": {"cpu_percent_of_one_core": cpu, "rss_mb_max": 120.0},
    }


def _synthetic() -> dict[str, Any]:
    e2e = [
        _phase("rate100", p50=12.0, p99=40.0, alerts=1000, accepted=1000, tps=100.0, cpu=60.0),
        _phase("rate500", p50=300.0, p99=900.0, alerts=5000, accepted=4900, tps=350.0, cpu=150.0),
        _phase("rate500-run2", p50=300.0, p99=900.0, alerts=5000, accepted=4700, tps=340.0, cpu=150.0),
        _phase("rate500-run3", p50=300.0, p99=900.0, alerts=5000, accepted=5000, tps=360.0, cpu=150.0),
    ]
    floor = [
        _phase("rate100", p50=6.0, p99=20.0, alerts=1000, accepted=1000, tps=100.0, cpu=20.0),
        _phase("rate500", p50=10.0, p99=50.0, alerts=5000, accepted=5000, tps=500.0, cpu=75.0),
    ]
    point = {"offered_per_s": 500, "triggered_per_s": 320.0, "p99_ms_all_accepted": 800.0, "failed_other": 0}
    return {
        "sections": {
            "e2e": {"phases": e2e},
            "peers": {"floor": {"phases": floor}, "am_executor": {"skipped": "no Go toolchain"}},
            "saturation": {
                "curves": {"trm-sre": [point]},
                "best_sustained": {"trm-sre": point},
                "seconds_per_level": 4,
            },
            "coldstart": {"readyz": {"ms": {"controller with the TRM": {"n": 2, "p50": 1800.0, "max": 2500.0}}}},
            "runtimes": {
                "runtimes": {
                    "onnx": {
                        "trm": {"latency_ms": {"n": 300, "p50": 3.5, "p99": 4.0}},
                        "controller": {"under_load": {"rss_mb_after": 180.0, "seconds": 20.0}},
                    }
                },
                "serving_install": {"mb": 300.0, "torch_installed": False},
            },
        }
    }


def test_the_targets_are_issue_14s_each_with_its_measure_and_verdict() -> None:
    rows = {t["id"]: t for t in targets(_synthetic())}
    assert list(rows) == [
        "latency_100",
        "burst_500",
        "sustained_300",
        "rss_100",
        "readyz",
        "serving_install",
        "trm_latency",
    ]
    assert rows["latency_100"]["met"] is True and "p99 40.0 ms" in rows["latency_100"]["measured"]
    # One of the three 500/s runs accepted 94%: the target holds for each run, so it is missed, and says which.
    assert rows["burst_500"]["met"] is False
    assert "run 2: 94.0% accepted" in rows["burst_500"]["measured"]
    assert rows["sustained_300"]["met"] is True and "320 triggers/s" in rows["sustained_300"]["measured"]
    assert rows["rss_100"]["met"] is True and "quick mode: after 20.0 s, not 60" in rows["rss_100"]["measured"]
    assert rows["readyz"]["met"] is False and "1.25× the limit" in rows["readyz"]["measured"]
    assert rows["serving_install"]["met"] is True and "torch not installed" in rows["serving_install"]["measured"]
    assert rows["trm_latency"]["met"] is True


def test_trm_sre_is_reported_as_a_ratio_of_the_floor_and_the_peer_says_why_it_is_missing() -> None:
    results = _synthetic()
    ratios = compare(results["sections"])
    assert ratios["floor"]["rate100"]["p50_webhook_to_sink"] == 2.0
    assert ratios["floor"]["rate500"]["trigger_throughput"] == 0.7
    assert ratios["floor"]["rate500"]["cpu"] == 2.0
    assert ratios["am_executor"] == {"unavailable": "no Go toolchain"}
    table = "\n".join(_ratios(results["sections"]))
    assert "| the floor (bench/floor.py) | rate100 | 2.00 |" in table
    assert "not measured: no Go toolchain" in table
    # The Targets table of BENCHMARKS.md: a row per target with its verdict.
    head = {"command": "python -m bench", "date": "today", "mode": {"name": "quick"}, "duration_s": 60}
    markdown = render(head | {"sections": {}, "targets": targets(results)}, REPO / "BENCHMARKS.md", None)
    for row in targets(results):
        verdict = "**met**" if row["met"] else "**missed**"
        assert f"| {row['target']} | {row['measured']} | {verdict} |" in markdown


# --------------------------------------------------------------------------
# The sections, in smoke mode
# --------------------------------------------------------------------------


def _section(name: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.section", name, "--mode", "smoke", "--out", str(out)]
        + ["--workdir", str(tmp_path / "work"), "--plots-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=child_env(),
    )
    assert done.returncode == 0, f"the {name} section failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return json.loads(out.read_text())


@pytest.mark.slow
def test_the_peers_section_runs_the_floor_and_the_peer_and_loses_nothing(tmp_path: Path) -> None:
    result = _section("peers", tmp_path)
    for stack in ("floor", "am_executor"):
        (phase,) = result[stack]["phases"]
        assert phase["phase"] == "rate5" and phase["alerts"] == 10
        assert (phase["accepted"], phase["triggered"], phase["lost"]) == (10, 10, 0), stack
        assert phase["duplicate_triggers"] == 0


@pytest.mark.slow
def test_the_saturation_section_draws_a_curve_per_stack(tmp_path: Path) -> None:
    result = _section("saturation", tmp_path)
    assert result["levels"] == [20, 50]
    for stack in ("trm-sre", "floor"):
        curve = result["curves"][stack]
        assert [p["offered_per_s"] for p in curve] == [20, 50]
        for p in curve:
            assert p["accepted"] == p["triggered"] == p["alerts"], (stack, p)
            assert p["p99_ms_all_accepted"] == p["p99_ms"]
        assert result["best_sustained"][stack]["offered_per_s"] == 50
    assert (tmp_path / result["plots"]["saturation"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
