"""The sink client keeps its connection to a sink between deliveries, and an answer that drips cannot hold one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from controller.engine.delivery import SinkClient
from tests.pipeline.engine.builders import sample_trigger


async def _serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


async def test_deliveries_to_one_sink_reuse_its_connection(tmp_path: Path) -> None:
    peers: list[int] = []

    async def accept(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.Response(status=202, text="accepted")  # a short body, as a Knative broker ingress answers

    runner, url = await _serve(accept)
    client = SinkClient(default_sink=url, jsonl_path=tmp_path / "unused.jsonl")
    try:
        results = [await client.deliver(sample_trigger(n=n)) for n in range(30)]
    finally:
        await client.aclose()
        await runner.cleanup()
    assert all(r.delivered for r in results)
    assert len(peers) == 30
    assert len(set(peers)) == 1, f"{len(set(peers))} connections for 30 deliveries"


async def test_an_answer_that_drips_still_counts_as_delivered_at_once(tmp_path: Path) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=202, headers={"Content-Length": "1000"})
        await response.prepare(request)
        for _ in range(100):  # 10 s for a body that says it is short
            await response.write(b"x")
            await asyncio.sleep(0.1)
        return response

    runner, url = await _serve(drip)
    client = SinkClient(default_sink=url, jsonl_path=tmp_path / "unused.jsonl", timeout_s=5.0)
    try:
        result = await client.deliver(sample_trigger())
    finally:
        await client.aclose()
        await runner.cleanup()
    # The status settled it: had the client waited for the body, the 5 s deadline would have made it a retry.
    assert result.delivered and result.status == 202 and result.attempts == 1
