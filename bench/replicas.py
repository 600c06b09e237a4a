"""Section 7, replicas: throughput of 1, 2 and 3 controllers on one PostgreSQL database, next to one on SQLite.

Each configuration is fresh: controllers started with `--store` (a new
database on a throwaway PostgreSQL server with fsync on, tests/support/postgres.py,
or the default SQLite file), the TRM off (rules decide; what is measured is the
store and the coordination, not the model), one capture sink. A burst of
`alerts` distinct incidents goes out as webhooks of 10 alerts, spread
round-robin over the replicas by 16 concurrent senders; a 503 is retried
after its Retry-After, as Alertmanager would. Throughput is incidents decided
and delivered per second, from the first POST to the last trigger's arrival.
Where the time goes: CPU seconds of the controllers and of the PostgreSQL
server processes over the burst, per alert, and the share of the 2xx latency.
Ratios are to one replica on SQLite and to one on PostgreSQL; nothing is
asserted (the numbers depend on the machine: on a 2-core box three
controllers and the database share two cores).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.alerts import BENCH_POLICY, crashloop_alert, payload
from bench.modes import Mode, Options
from bench.procs import ControllerProcess, child_env, controller_argv
from bench.sink import TriggerSink
from bench.stats import ratio, summarize

CONFIGS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3))
PER_WEBHOOK = 10
SENDERS = 16
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _process_tree_cpu(root: int) -> float:
    """CPU seconds of `root` and every process whose parent is `root` (a postmaster and its backends)."""
    total = _cpu_seconds(root)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == root:
                total += _cpu_seconds(int(entry.name))
    return total


def _post(url: str, body: bytes) -> tuple[int, float, int]:
    """POST until accepted (503: wait Retry-After, as Alertmanager retries); (status, seconds to 2xx, retries)."""
    retries = 0
    started = time.monotonic()
    while True:
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, time.monotonic() - started, retries
        except urllib.error.HTTPError as error:
            if error.code != 503 or retries >= 20:
                return error.code, time.monotonic() - started, retries
            retries += 1
            time.sleep(min(float(error.headers.get("Retry-After") or 1), 2.0))


def _burst(
    kind: str, replicas: int, alerts: int, workdir: Path, store_url: str | None, postmaster: int | None
) -> dict[str, Any]:
    name = f"{kind}-{replicas}"
    run = f"replicas-{name}-{int(time.time())}"
    starts_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with TriggerSink() as sink:
        procs = []
        for i in range(replicas):
            extra = ["--store", store_url] if store_url else []
            proc = ControllerProcess(
                controller_argv(workdir / f"state-{name}-{i}", policies=BENCH_POLICY, model=False, extra=extra),
                child_env(K_SINK=sink.url),
                workdir / f"controller-{name}-{i}.log",
            )
            procs.append(proc)
            proc.start()
            proc.wait_ready()
        try:
            webhooks = []
            for start in range(0, alerts, PER_WEBHOOK):
                batch = [
                    crashloop_alert(run, name, i, starts_at) for i in range(start, min(start + PER_WEBHOOK, alerts))
                ]
                url = f"{procs[(start // PER_WEBHOOK) % replicas].url}/alertmanager"
                webhooks.append((url, json.dumps(payload(batch, f"{name}-{start}")).encode(), batch))
            wanted = {a["fingerprint"] for _, _, batch in webhooks for a in batch}
            cpu_before = [_cpu_seconds(p.pid) for p in procs]
            db_before = _process_tree_cpu(postmaster) if postmaster else 0.0
            t0 = time.monotonic()
            with ThreadPoolExecutor(SENDERS) as pool:
                answers = list(pool.map(lambda w: _post(w[0], w[1]), webhooks))
            sent_s = time.monotonic() - t0
            accepted = {
                a["fingerprint"]
                for (status, _, _), (_, _, batch) in zip(answers, webhooks, strict=True)
                if 200 <= status < 300
                for a in batch
            }
            first: dict[str, float] = {}
            duplicates = 0
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                first, duplicates = {}, 0
                for arrival in sink.arrivals():
                    if arrival.fingerprint in wanted and arrival.ce_type.endswith("lambda.trigger"):
                        if arrival.fingerprint in first:
                            duplicates += 1
                        else:
                            first[arrival.fingerprint] = arrival.at
                if accepted <= set(first):
                    break
                time.sleep(0.1)
            last = max(first.values(), default=t0)
            cpu_ctl = sum(_cpu_seconds(p.pid) for p in procs) - sum(cpu_before)
            cpu_db = (_process_tree_cpu(postmaster) - db_before) if postmaster else 0.0
        finally:
            for proc in procs:
                proc.stop()
    seconds = max(last - t0, 1e-6)
    triggered = len(set(first) & accepted)
    return {
        "store": kind,
        "replicas": replicas,
        "alerts": alerts,
        "accepted": len(accepted),
        "triggered": triggered,
        "lost": len(accepted - set(first)),
        "duplicate_deliveries": duplicates,
        "retried_503": sum(r for _, _, r in answers),
        "send_seconds": round(sent_s, 3),
        "seconds": round(seconds, 3),
        "alerts_per_s": round(triggered / seconds, 1),
        "post_to_2xx_ms": summarize([s * 1000 for _, s, _ in answers]),
        "cpu_s_controllers": round(cpu_ctl, 2),
        "cpu_s_database": round(cpu_db, 2),
        "cpu_ms_per_alert_controllers": round(1000 * cpu_ctl / max(triggered, 1), 2),
        "cpu_ms_per_alert_database": round(1000 * cpu_db / max(triggered, 1), 2),
    }


def run(mode: Mode, workdir: Path | None = None, options: Options | None = None) -> dict[str, Any]:
    from tests.support.postgres import start_postgres

    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-bench-replicas-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    alerts = max(mode.storm_alerts * 4, 100) if mode.name != "smoke" else 60
    server = start_postgres(fsync=True)  # durable commits, as SQLite's
    results: dict[str, Any] = {
        "mode": mode.name,
        "alerts": alerts,
        "cores": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "configs": {},
    }
    try:
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        for kind, replicas in CONFIGS:
            url = server.create_database() if kind == "postgresql" else None
            outcome = _burst(kind, replicas, alerts, workdir, url, postmaster if url else None)
            results["configs"][f"{kind}-{replicas}"] = outcome
            print(json.dumps(outcome), file=sys.stderr)
    finally:
        server.stop()
    configs = results["configs"]
    base_sqlite = configs.get("sqlite-1", {}).get("alerts_per_s")
    base_pg = configs.get("postgresql-1", {}).get("alerts_per_s")
    results["ratios"] = {
        name: {
            "throughput_to_sqlite_1": ratio(c["alerts_per_s"], base_sqlite),
            "throughput_to_postgresql_1": ratio(c["alerts_per_s"], base_pg),
        }
        for name, c in configs.items()
    }
    return results
