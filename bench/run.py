"""The orchestrator: run the sections (each in its own process), write the JSON, the plots and BENCHMARKS.md.

python -m bench [--full | --smoke] [--sections selection,e2e,...] [--out BENCHMARKS.md] [--json PATH]
trm-sre bench [--full] [--out BENCHMARKS.md]          (the same, through the CLI)
make bench [BENCH=full]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.env import REPO, environment, load_average
from bench.modes import FULL, QUICK, SMOKE, Mode
from bench.procs import child_env
from bench.section import SECTIONS
from models.progress import Progress

DEFAULT_OUT = REPO / "BENCHMARKS.md"
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"
DEFAULT_PLOTS = REPO / "docs" / "reports"
# Per-section ceilings: a section that hangs must not hang the whole run.
_SECTION_TIMEOUT_S = {"quick": 900, "full": 5400, "smoke": 300}


def build_parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run the trm-sre benchmarks and write BENCHMARKS.md + JSON."
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the long run (60 s load phases, every held-out alert)")
    size.add_argument(
        "--smoke", action="store_true", help="a few seconds per section: checks the harness, not the numbers"
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report (default: BENCHMARKS.md)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="the JSON results (default: bench/results/latest.json next to the default report, "
        "else the report's name with .json)",
    )
    parser.add_argument(
        "--plots-dir",
        type=Path,
        default=None,
        help="where the PNG plots go (default: docs/reports for the default report, else beside the report)",
    )
    parser.add_argument("--checkpoint", default=None, help="TRM checkpoint directory (default: models/checkpoints/trm)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: re-write the report from the existing JSON (after editing bench/analysis.md)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (none anyway when stderr is not a terminal or CI is set)"
    )
    return parser


def _mode(args: argparse.Namespace) -> Mode:
    return FULL if args.full else SMOKE if args.smoke else QUICK


def run_section(name: str, mode: Mode, workdir: Path, plots_dir: Path, checkpoint: str | None) -> dict[str, Any]:
    out = workdir / f"{name}.json"
    argv = [
        sys.executable,
        "-m",
        "bench.section",
        name,
        "--mode",
        mode.name,
        "--out",
        str(out),
        "--workdir",
        str(workdir / name),
        "--plots-dir",
        str(plots_dir),
    ]
    if checkpoint:
        argv += ["--checkpoint", checkpoint]
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        with open(workdir / f"{name}.log", "w") as log:
            subprocess.run(
                argv,
                cwd=REPO,
                env=child_env(),
                stdout=log,
                stderr=log,
                check=False,
                timeout=_SECTION_TIMEOUT_S[mode.name],
            )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {_SECTION_TIMEOUT_S[mode.name]} s (log: {workdir / f'{name}.log'})"}
    if not out.exists():
        return {"error": f"the section wrote no result (log: {workdir / f'{name}.log'})"}
    result: dict[str, Any] = json.loads(out.read_text())
    print(
        f"bench: {name} done in {time.monotonic() - started:.0f} s"
        + (f" — FAILED: {result['error']}" if "error" in result else ""),
        file=sys.stderr,
        flush=True,
    )
    return result


def main(argv: list[str] | None = None, *, prog: str = "python -m bench", command: str | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    mode = _mode(args)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        print(f"{prog}: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    default_out = out == DEFAULT_OUT.resolve()
    json_path = (args.json or (DEFAULT_JSON if default_out else out.with_suffix(".json"))).resolve()
    plots_dir = (args.plots_dir or (DEFAULT_PLOTS if default_out else out.parent)).resolve()
    if args.render_only:
        results = json.loads(json_path.read_text())
        out.write_text(report.render(results, out, plots_dir))
        print(f"bench: re-wrote {out} from {json_path}", file=sys.stderr)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trm-sre-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    plots_dir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    results: dict[str, Any] = {
        "schema": "trm-sre-bench/1",
        "command": command or " ".join([prog, *map(shlex.quote, argv)]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode.as_dict(),
        "environment": environment(),
        "workdir": str(workdir),
        "sections": {},
    }
    with Progress(len(names), "bench", unit="section", quiet=args.quiet) as bar:
        for name in names:
            bar.set_description(f"bench: {name}")
            results["sections"][name] = run_section(name, mode, workdir, plots_dir, args.checkpoint)
            bar.update()
    e2e = results["sections"].get("e2e")
    if e2e and "phases" in e2e:
        from bench import plots

        e2e["plots"] = plots.e2e_plot(e2e, plots_dir)
    if "peers" in results["sections"]:
        from bench.peers import compare

        results["comparison"] = compare(results["sections"])
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["load_average_at_end"] = load_average()
    results["targets"] = report.targets(results)
    try:
        results["json_path"] = str(json_path.relative_to(REPO))
    except ValueError:
        results["json_path"] = str(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    out.write_text(report.render(results, out, plots_dir))
    failed = [n for n, s in results["sections"].items() if "error" in s]
    print(
        f"bench: wrote {out} and {json_path} in {results['duration_s']:.0f} s"
        + (f"; sections that failed: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
    for target in results["targets"]:
        state = "met" if target["met"] else "MISSED" if target["met"] is False else "not measured"
        print(f"  [{state}] {target['target']}: {target['measured']}", file=sys.stderr)
    return 1 if failed else 0
