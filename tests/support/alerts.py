"""The Alertmanager payloads under tests/fixtures/alerts, read fresh for each use (callers may change them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "alerts"


def fixture_payload(name: str = "crashloop.json") -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return payload
