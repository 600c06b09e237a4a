"""A loopback stand-in for Ollama's /api/chat that answers tool calls instantly, in its own process.

    python -m bench.fake_ollama --answers answers.json --port-file port.txt

It exists to measure the function-calling stage's *client* cost (building
the tools and the prompt, the HTTP exchange, decoding the reply, parsing and
validating the call) without a model's seconds of inference drowning it.
`answers.json` maps an alert's label fingerprint to the call to return
(`{"name": ..., "arguments": {...}}`, or null for the abstain tool), so the
stage sees realistic, valid calls; unknown alerts get the abstain tool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.decision.parsing import ABSTAIN_TOOL
from controller.schemas.alerts import label_fingerprint


def _reply(model: str, call: dict[str, Any] | None) -> dict[str, Any]:
    if call is None:
        call = {"name": ABSTAIN_TOOL, "arguments": {"reason": "nothing fits"}}
    return {
        "model": model,
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "", "tool_calls": [{"function": call}]},
        "done": True,
        "done_reason": "stop",
    }


def build_app(answers: dict[str, Any]) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        call = None
        try:
            user = next(m for m in body["messages"] if m.get("role") == "user")
            labels = json.loads(user["content"])["labels"]
            call = answers.get(label_fingerprint(labels))
        except (KeyError, StopIteration, ValueError, TypeError):
            pass
        return web.json_response(_reply(str(body.get("model", "fake")), call))

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/api/chat", chat)
    return app


async def serve(answers: dict[str, Any], port_file: Path) -> None:
    runner = web.AppRunner(build_app(answers), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # the bound port of port 0
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    port_file.write_text(str(port))
    await asyncio.Event().wait()  # until the parent kills us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_ollama")
    parser.add_argument("--answers", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)
    answers = json.loads(args.answers.read_text())
    asyncio.run(serve(answers, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
