"""Controllers run inside the test process: real HTTP on 127.0.0.1, the real store and pipeline, no model.

Used by tests/hardening and tests/pipeline/edge. Tests that need a separate
process (signals, crashes, cluster mode) use `tests/e2e/harness.py` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from controller.app import Components, Controller, build_components
from controller.edge.config import Limits
from controller.engine.model_loader import ModelState
from controller.settings import Settings


def server_settings(
    state_dir: Path,
    *,
    token: str | None = None,
    sink: str | None = None,
    limits: Limits | None = None,
    policies: list[Path] | None = None,
    token_file: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Standalone settings on 127.0.0.1, a free port, no model.

    `overrides` are setting values: top-level fields by name, and section fields by theirs (e.g.
    `queue_size=3` → engine.queue_size, `max_in_flight=1` → limits.max_in_flight). A whole section
    (`knative=KnativeOIDC(...)`) replaces it after validation, as a test of that section alone needs
    (Knative OIDC on a standalone server whose reviewer the test swaps in).
    """
    values: dict[str, Any] = {
        "standalone": True,
        "policy_files": [str(p) for p in policies or []],
        "port": 0,
        "state_dir": str(state_dir),
        "liveness_port": 0,
        "model": {"enabled": False},
    }
    if token_file:
        values["token_file"] = str(token_file)
    if token:
        values["webhook_token"] = token
    if sink:
        values["engine"] = {"sink": sink}
    sections = {name: value for name, value in overrides.items() if isinstance(value, BaseModel)}
    if limits is not None:
        sections["limits"] = limits
    for name, value in overrides.items():
        if name in sections:
            continue
        section = _section_of(name)
        if section is None:
            values[name] = value
        else:
            values.setdefault(section, {})[name] = value
    settings = Settings.load(values, environ={})
    return settings.model_copy(update=sections) if sections else settings


def _section_of(name: str) -> str | None:
    if name in Settings.model_fields:
        return None
    for section in ("engine", "limits", "knative", "tls", "model"):
        annotation = Settings.model_fields[section].annotation
        if name in annotation.model_fields:  # type: ignore[union-attr]
            return section
    raise TypeError(f"{name!r} is not a setting")


def launch(
    settings: Settings, *, model: ModelState | None = None
) -> tuple[Components, Controller, asyncio.Task[int], list[str]]:
    """Build a controller and start it in this event loop: (components, controller, its task, announced lines).

    It is not listening yet when this returns: `await wait_listening(controller, task, ...)`.
    """
    components = build_components(settings, model=model or ModelState(None, "disabled", "tests"))
    announced: list[str] = []
    controller = Controller(components, announce=announced.append)
    task = asyncio.create_task(controller.run(install_signal_handlers=False))
    return components, controller, task, announced


async def wait_listening(controller: Controller, task: asyncio.Task[int], *, attempts: int) -> None:
    """Poll every 10 ms, at most `attempts` times, until `controller` listens; a failed start is re-raised."""
    for _ in range(attempts):
        if controller.port or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert controller.port, "the server did not start"


@contextmanager
def controller_in_thread(
    settings: Settings, *, attempts: int, join_timeout: float
) -> Iterator[tuple[str, threading.Thread, dict[str, Any]]]:
    """A controller in a thread with its own event loop, for clients that call it synchronously over HTTP.

    Yields its URL, the thread, and a holder with the `controller` (and its `exit` code once `run` returned).
    Waits at most `attempts` × 10 ms for it to listen; stopped and joined (at most `join_timeout` s) on exit.
    """
    holder: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        components = build_components(settings, model=ModelState(None, "disabled", "tests"))
        controller = Controller(components, announce=lambda line: None)
        holder["controller"] = controller
        holder["exit"] = loop.run_until_complete(controller.run(install_signal_handlers=False))

    thread = threading.Thread(target=serve, name="fuzz-server", daemon=True)
    thread.start()
    for _ in range(attempts):
        controller = holder.get("controller")
        if controller is not None and controller.port:
            break
        if not thread.is_alive():
            raise RuntimeError("the fuzz server exited at start")
        threading.Event().wait(0.01)
    else:
        raise RuntimeError("the fuzz server did not start")
    try:
        yield f"http://127.0.0.1:{controller.port}", thread, holder
    finally:
        loop.call_soon_threadsafe(controller.request_stop)
        thread.join(join_timeout)
