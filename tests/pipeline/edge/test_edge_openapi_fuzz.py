"""Schemathesis against a running server: whatever the schema allows (or almost allows), no 500s.

The server runs in a thread with its own event loop (schemathesis calls it
synchronously over real HTTP); the bodies it generates are random alerts,
CloudEvents, reasoning requests and approvals.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.support.controllers import controller_in_thread, server_settings

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings_ = server_settings(Path(tmp_path_factory.mktemp("fuzz")) / "state", token=TOKEN)
    with controller_in_thread(settings_, attempts=3000, join_timeout=30) as (url, _, _):
        yield url


def test_no_request_makes_the_server_fail(fuzz_server: str) -> None:
    # Operations are walked by hand: schemathesis' pytest plugin does not support this pytest.
    schema = schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8  # every route but /openapi.json itself
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=fuzz_server, headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error]
            )

        call()
    exposition = httpx.get(f"{fuzz_server}/metrics").text
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("agent_sre_http_requests_total{")
    )
    assert served >= 100  # the examples really reached the server
    assert 'code="500"' not in exposition
