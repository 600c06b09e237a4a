"""`trm-sre validate-policy FILE...`: read the files (or stdin), check each document offline, print the results.

The checks themselves are pure (`controller.tools.validate_policy`); this is
the command around them: inputs, the CRD to check against, output and exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from controller.tools import PROG

_POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def _policy_inputs(names: list[str], stdin: TextIO) -> list[tuple[str, str | Exception]]:
    """(source, text) for every file named (a directory: its YAML and JSON files; `-`: stdin), or the read error."""
    inputs: list[tuple[str, str | Exception]] = []
    for name in names:
        path = Path(name)
        if name == "-":
            inputs.append(("<stdin>", stdin.read()))
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in _POLICY_SUFFIXES and p.is_file())
            inputs += [(str(p), _read_text(p)) for p in found] or [
                (name, FileNotFoundError("no .yaml, .yml or .json file in it"))
            ]
        else:
            inputs.append((name, _read_text(path)))
    return inputs


def _read_text(path: Path) -> str | Exception:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return FileNotFoundError("no such file")
    except (OSError, UnicodeDecodeError) as exc:
        return exc


def cmd_validate_policy(
    args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    from controller.tools.crd_schema import CrdSchema
    from controller.tools.validate_policy import DocumentResult, PolicyInputError, Validator, load_crd
    from runbooks import default_catalog

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    notes: list[str] = []
    crd: CrdSchema | None = None
    try:
        crd = load_crd(Path(args.crd)) if args.crd else load_crd()
    except PolicyInputError as exc:
        if args.crd:
            print(f"{PROG} validate-policy: error: {exc}", file=stderr)
            return 2
        notes.append(f"{exc}: the CRD schema is not checked, only the operator's checks run (pass --crd FILE)")
    notes += [
        f"{rule.path}: the CEL rule {rule.rule!r} is checked only by the apiserver (kubectl apply --dry-run=server "
        "-f FILE)"
        for rule in (crd.unchecked_rules if crd else ())
    ]
    validator = Validator(default_catalog(), crd, system_namespace=args.system_namespace)
    results: list[DocumentResult] = []
    for source, text in _policy_inputs(args.files, stdin):
        if isinstance(text, Exception):
            reason = str(text) if isinstance(text, FileNotFoundError) else f"cannot read it: {text}"
            results.append(DocumentResult.failed(PolicyInputError(source, reason)))
        else:
            results += validator.validate_text(text, source)
    failed = [r for r in results if r.status == "error"]
    for result in failed:
        print(f"{PROG} validate-policy: error: {result.lines()[0]}", file=stderr)
    if not args.quiet:
        for note in notes:
            print(f"{PROG} validate-policy: note: {note}", file=stderr)
    if args.json:
        listed = [r for r in results if not args.quiet or r.status in ("invalid", "error")]
        json.dump([r.as_json() for r in listed], stdout, indent=2)
        stdout.write("\n")
    else:  # errors are on stderr already
        listed = [r for r in results if r.status == "invalid" or (not args.quiet and r.status != "error")]
        stdout.writelines(line + "\n" for result in listed for line in result.lines())
        counts = {s: sum(r.status == s for r in results) for s in ("valid", "invalid", "skipped", "error")}
        if not args.quiet and len(results) > 1:
            stdout.write(", ".join(f"{n} {s}" for s, n in counts.items() if n) + "\n")
    if failed:
        return 2
    return 1 if any(r.status == "invalid" for r in results) else 0
