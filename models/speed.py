"""Measure what a decision costs on this machine (no asserts: numbers go to the model card).

    python -m models.speed [--dataset models/datasets/test-heldout-names.jsonl] [--n 1000]
                           [--out docs/reports/speed.json]

- latency: one CPU thread, batch 1, `TRMSelector.select` end to end (tokenization, recursion with
  early halting, decoding, catalog validation), p50 / p99 / mean over `n` alerts after a warm-up;
- throughput: `select_batch` with batches of 256 on 2 threads, decisions per second;
- memory: RSS of a fresh process after `import torch` and after `TRMSelector.load()`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from models.evaluate import _percentile, load_dataset

_RSS_SNIPPET = """
import json, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
import torch
torch.set_num_threads(1)
before = rss()
from models.selector import TRMSelector
sel = TRMSelector.load()
sel.select({'labels': {'alertname': 'KubePodCrashLooping', 'pod': 'a-1', 'namespace': 'b'}})
print(json.dumps({'rss_mb_after_import_torch': before, 'rss_mb_with_model_loaded': rss()}))
"""


def measure_rss() -> dict[str, float]:
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SNIPPET],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    import torch

    from models.selector import DEFAULT_CHECKPOINT_DIR, TRMSelector

    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(prog="python -m models.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=repo / "models" / "datasets" / "test-heldout-names.jsonl")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    alerts = [r["alert"] for r in load_dataset(args.dataset)][: args.n]
    torch.set_num_threads(1)
    sel = TRMSelector.load()
    for a in alerts[:50]:
        sel.select(a)
    lat, steps = [], []
    for a in alerts:
        t0 = time.perf_counter()
        d = sel.select(a)
        lat.append((time.perf_counter() - t0) * 1000)
        steps.append(d.steps)

    torch.set_num_threads(2)
    sel.select_batch(alerts[: args.batch_size])
    t0 = time.perf_counter()
    done = 0
    for s in range(0, len(alerts), args.batch_size):
        done += len(sel.select_batch(alerts[s : s + args.batch_size]))
    throughput = done / (time.perf_counter() - t0)

    result = {
        "n": len(alerts),
        "latency_ms_1_thread_batch_1": {
            "p50": _percentile(lat, 50),
            "p99": _percentile(lat, 99),
            "mean": sum(lat) / len(lat),
            "max": max(lat),
        },
        "mean_halting_step": sum(steps) / len(steps),
        "throughput_per_s_2_threads": throughput,
        "throughput_batch_size": args.batch_size,
        "parameters": sel.info["parameters"],
        "checkpoint_mb": sum(p.stat().st_size for p in DEFAULT_CHECKPOINT_DIR.iterdir()) / 1e6,
    } | measure_rss()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
