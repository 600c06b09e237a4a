"""Loaded by the trm-sre child of test_silences_alertmanager's crash test (PYTHONPATH puts it first).

Kills the process right after Alertmanager created a silence and before its
id is stored, once (a marker file records that it happened), as a crash would.
"""

import os
from pathlib import Path

_MARKER = os.environ.get("TRM_SRE_TEST_SILENCE_CRASH_MARKER")

if _MARKER:
    from controller.engine import silences

    def _crash(self: object, decision_id: str, silence_id: str) -> None:
        marker = Path(_MARKER)
        if not marker.exists():
            marker.write_text(f"{decision_id} {silence_id}\n")
            os._exit(137)

    silences.Silences.after_create = _crash  # type: ignore[method-assign]
