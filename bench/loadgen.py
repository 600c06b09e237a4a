"""Open-loop load generator: POST Alertmanager payloads at a fixed rate, in its own process.

    python -m bench.loadgen --url http://127.0.0.1:8080/alertmanager --rate 100 --duration 10 \
        --run r1 --phase p100 --out /tmp/p100.json [--per-payload 1] [--count N] [--connections 256]

Open loop: payload j is sent at t0 + j x per_payload / rate whether or not
earlier requests were answered, so a slow server sees its load keep coming
(as Alertmanager's would) instead of the generator politely slowing down
with it, which would hide the queueing delay (coordinated omission). Each
request is its own task; only the connection cap (`--connections`) can
delay a send, and such a wait is counted in that request's latency.

Payload bodies are built before the clock starts, so the generator's own
CPU per request is one aiohttp POST. The output JSON holds one row per
alert: [fingerprint, scheduled, sent, answered, status] with times from
`time.monotonic()` (shared by every process on Linux) and status an HTTP
code or "timeout" / "error:<kind>"; plus the generator's own lag, so a
reader can tell a slow server from a starved generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.alerts import crashloop_alert, payload


def build_bodies(
    run: str, phase: str, count: int, per_payload: int, starts_at: str, extra_labels: int = 0
) -> list[tuple[list[str], bytes]]:
    bodies = []
    for start in range(0, count, per_payload):
        alerts = [
            crashloop_alert(run, phase, i, starts_at, extra_labels)
            for i in range(start, min(start + per_payload, count))
        ]
        body = json.dumps(payload(alerts, f"{phase}-{start}"), separators=(",", ":")).encode()
        bodies.append(([a["fingerprint"] for a in alerts], body))
    return bodies


async def generate(
    url: str,
    bodies: list[tuple[list[str], bytes]],
    interval_s: float,
    connections: int,
    timeout_s: float,
    token: str | None = None,
) -> dict[str, Any]:
    rows: list[list[Any]] = []
    lags: list[float] = []
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        async def send(fingerprints: list[str], body: bytes, scheduled: float) -> None:
            sent = time.monotonic()
            status: int | str
            try:
                async with session.post(url, data=body) as response:
                    await response.read()
                    status = response.status
            except TimeoutError:
                status = "timeout"
            except aiohttp.ClientError as exc:
                status = f"error:{type(exc).__name__}"
            answered = time.monotonic()
            for fp in fingerprints:
                rows.append([fp, scheduled, sent, answered, status])

        tasks: set[asyncio.Task[None]] = set()
        # Let the connection pool warm up on the first request's own schedule, not before it.
        t0 = time.monotonic() + 0.05
        schedule = [t0 + j * interval_s for j in range(len(bodies))]
        j = 0
        while j < len(bodies):
            now = time.monotonic()
            while j < len(bodies) and schedule[j] <= now:
                lags.append(now - schedule[j])
                fps, body = bodies[j]
                task = asyncio.create_task(send(fps, body, schedule[j]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                j += 1
            if j < len(bodies):
                await asyncio.sleep(max(0.0, schedule[j] - time.monotonic()))
        send_window = time.monotonic() - t0
        if tasks:
            await asyncio.wait(set(tasks), timeout=timeout_s + 5)
    lags_ms = sorted(x * 1000 for x in lags)
    return {
        "rows": rows,
        "t0": t0,
        "send_window_s": send_window,
        "payloads": len(bodies),
        "generator_lag_ms_p50": lags_ms[len(lags_ms) // 2] if lags_ms else None,
        "generator_lag_ms_p99": lags_ms[min(len(lags_ms) - 1, int(len(lags_ms) * 0.99))] if lags_ms else None,
        "generator_lag_ms_max": lags_ms[-1] if lags_ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="alerts per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--count", type=int, default=None, help="alerts in all (default: rate x duration)")
    parser.add_argument("--per-payload", type=int, default=1, help="alerts per webhook payload (one group)")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as timed out")
    parser.add_argument("--run", required=True, help="run id: part of every fingerprint")
    parser.add_argument("--phase", required=True, help="phase name: part of every fingerprint and pod name")
    parser.add_argument("--extra-labels", type=int, default=0)
    parser.add_argument("--token", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    count = args.count if args.count is not None else max(1, round(args.rate * args.duration))
    starts_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    bodies = build_bodies(args.run, args.phase, count, max(1, args.per_payload), starts_at, args.extra_labels)
    interval = max(1, args.per_payload) / args.rate if args.rate > 0 else 0.0
    result = asyncio.run(generate(args.url, bodies, interval, args.connections, args.timeout, args.token))
    result |= {
        "rate": args.rate,
        "duration": args.duration,
        "alerts": count,
        "per_payload": args.per_payload,
        "body_bytes_mean": sum(len(b) for _, b in bodies) / len(bodies),
    }
    args.out.write_text(json.dumps(result))
    codes: dict[str, int] = {}
    for row in result["rows"]:
        codes[str(row[4])] = codes.get(str(row[4]), 0) + 1
    print(
        json.dumps(
            {"phase": args.phase, "alerts": count, "codes": codes, "send_window_s": round(result["send_window_s"], 2)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
