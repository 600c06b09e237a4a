"""Collect published Prometheus alerting rules from local git snapshots of public repositories.

    python -m models.sources.collect /work/.mirror/OWNER+NAME/repo ... --out models/datasets/rules

Offline and run by hand: it reads snapshots that are already on disk (`git grep`, `git show`),
parses every YAML file that holds `alert:` rules (PrometheusRule objects, plain rule files, Helm
templates after removing the Helm directives), and writes one JSON file per repository with the
rules as *data* (alert name, expression, static labels, annotations) and their provenance
(repository, path, commit). No code of those repositories is kept.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

_ESCAPED_OPEN = re.compile(r"\{\{\s*`\{\{`\s*\}\}")
_ESCAPED_CLOSE = re.compile(r"\{\{\s*`\}\}`\s*\}\}")
_RAW = re.compile(r"\{\{-?\s*`(.*?)`\s*-?\}\}", re.DOTALL)
_TEMPLATE = re.compile(r"\{\{-?(.*?)-?\}\}", re.DOTALL)
_PROM_TEMPLATE = re.compile(r"\$labels|\$value|\$externalLabels|humanize|\.Labels\b|\.Value\b|printf \"%")
_LINE_DIRECTIVE = re.compile(r"^\s*\{\{-?[^{}]*-?\}\}\s*$")


def _untemplate(text: str) -> str:
    """Remove Helm directives, keep Prometheus templates ({{ $labels.pod }})."""
    text = _ESCAPED_OPEN.sub("{{", _ESCAPED_CLOSE.sub("}}", text))
    text = _RAW.sub(lambda m: m.group(1), text)  # {{`raw text with {{ $labels.x }}`}}
    lines = []
    for line in text.splitlines():
        if _LINE_DIRECTIVE.match(line) and not _PROM_TEMPLATE.search(line):
            continue
        line = _TEMPLATE.sub(lambda m: m.group(0) if _PROM_TEMPLATE.search(m.group(1)) else "X", line)
        lines.append(line)
    return "\n".join(lines)


def _walk(node: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("alert"), str) and "expr" in node:
            out.append(node)
            return
        for v in node.values():
            _walk(v, out)
    elif isinstance(node, list):
        for v in node:
            _walk(v, out)


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, (str, int, float)) and str(k)}


def rules_of(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for candidate in (text, _untemplate(text)):
        try:
            docs = list(yaml.safe_load_all(candidate))
        except yaml.YAMLError:
            continue
        for doc in docs:
            if isinstance(doc, dict) and isinstance(doc.get("data"), dict):  # ConfigMaps holding rule files
                for v in list(doc["data"].values()):
                    if isinstance(v, str) and "alert:" in v:
                        try:
                            _walk(yaml.safe_load(v), found)
                        except yaml.YAMLError:
                            pass
            _walk(doc, found)
        if found:
            break
    out = []
    for r in found:
        expr = r.get("expr")
        if not isinstance(expr, str) or not expr.strip() or expr.strip() == "X":
            continue
        name = r["alert"].strip()
        if not name or "X" == name or "{{" in name:
            continue
        out.append(
            {
                "alert": name,
                "expr": " ".join(expr.split()),
                "for": str(r.get("for", "")),
                "labels": _str_map(r.get("labels")),
                "annotations": _str_map(r.get("annotations")),
            }
        )
    return out


def collect(repo_dir: Path) -> dict[str, Any]:
    git = ["git", "-C", str(repo_dir)]
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    url = subprocess.run(
        git + ["config", "--get", "remote.origin.url"], capture_output=True, text=True, check=False
    ).stdout.strip()
    name = repo_dir.parent.name.replace("+", "/") if repo_dir.name == "repo" else repo_dir.name
    files = subprocess.run(
        git + ["grep", "-l", "-E", r"^\s*-?\s*alert:\s*\S", "HEAD", "--", "*.yaml", "*.yml", "*.tpl"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    rules: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for f in files:
        path = f.split(":", 1)[1]
        if any(part in path for part in ("/test", "test/", "_test", "/tests/", "example")) and "rules" not in path:
            continue
        text = subprocess.run(git + ["show", f], capture_output=True, text=True, errors="replace", check=False).stdout
        if len(text) > 1_500_000:
            continue
        for r in rules_of(text):
            key = (r["alert"], r["expr"])
            if key in seen:
                continue
            seen.add(key)
            rules.append({"path": path} | r)
    return {"repository": name, "url": url, "commit": commit, "rules": rules}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.sources.collect", description=__doc__.splitlines()[0])
    parser.add_argument("repos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for repo in args.repos:
        data = collect(repo)
        fname = data["repository"].replace("/", "__") + ".json"
        (args.out / fname).write_text(json.dumps(data, indent=0, ensure_ascii=False) + "\n")
        print(f"{data['repository']}: {len(data['rules'])} rules", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
