"""Run one benchmark section in this (child) process and write its JSON: `python -m bench.section NAME ...`.

The orchestrator (`bench.run`) starts one child per section so a section's
imports, torch thread settings and memory never leak into the next one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from bench.modes import MODES, Options

SECTIONS = (
    "selection",
    "e2e",
    "peers",
    "saturation",
    "scale",
    "coldstart",
    "runtimes",
    "profile",
    "tracing",
    "replicas",
)
_MODULES = {
    "selection": "bench.selection",
    "e2e": "bench.e2e",
    "peers": "bench.peers",
    "saturation": "bench.saturation",
    "scale": "bench.scale",
    "coldstart": "bench.coldstart",
    "runtimes": "bench.runtimes",
    "profile": "bench.profile",
    "tracing": "bench.tracing",
    "replicas": "bench.replicas",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.section")
    parser.add_argument("name", choices=SECTIONS)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--plots-dir", type=Path, default=None)
    parser.add_argument("--checkpoint", default=None, help="TRM checkpoint directory (default: the shipped one)")
    args = parser.parse_args(argv)
    module = importlib.import_module(_MODULES[args.name])
    started = time.monotonic()
    try:
        options = Options(checkpoint=args.checkpoint, plots_dir=str(args.plots_dir) if args.plots_dir else None)
        result = module.run(MODES[args.mode], args.workdir, options)
        result["section_seconds"] = round(time.monotonic() - started, 1)
    except Exception as exc:  # noqa: BLE001 - a failed section is reported in the output, the others still run
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}", "section_seconds": round(time.monotonic() - started, 1)}
    args.out.write_text(json.dumps(result, indent=1, default=str))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
