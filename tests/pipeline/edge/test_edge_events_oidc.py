"""`/events` with Knative's OIDC tokens: the settings, the authenticator's rules, the routes (no apiserver here).

The TokenReview API is replaced by a fake reviewer; the same flows against a
real kube-apiserver are in tests/hardening/test_hardening_auth_knative.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from typing import Any

import pytest
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from controller.edge.config import KnativeOIDC
from controller.edge.knative_auth import EventsAuthenticator, Review, ReviewUnavailable
from controller.schemas.alerts import ALERT_FIRED
from controller.settings import Settings, SettingsError
from controller.tools import cli
from tests.pipeline.edge.servers import StartServer, fixture_payload

AUDIENCE = "trm-sre.trm-sre.svc"
SENDER = "system:serviceaccount:trm-sre:trm-sre-alert-fired-oidc-eventing.knative.dev-trigger"
OTHER = "system:serviceaccount:trm-sre:someone-else"


def jwt(subject: str = SENDER, *, exp: float | None = None, nonce: str = "") -> str:
    """A JWT-shaped string (unsigned: the fake reviewer decides what it means)."""

    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    claims: dict[str, Any] = {"sub": subject, "aud": [AUDIENCE], "nonce": nonce}
    if exp is not None:
        claims["exp"] = int(exp)
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeReviewer:
    """Answers like the apiserver: tokens it was told about are authenticated as their subject."""

    def __init__(self) -> None:
        self.calls = 0
        self.known: dict[str, Review] = {}
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None

    def accept(self, token: str, username: str = SENDER, audiences: tuple[str, ...] = (AUDIENCE,)) -> str:
        self.known[token] = Review(authenticated=True, username=username, audiences=audiences)
        return token

    def __call__(self, token: str, audience: str) -> Review:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return self.known.get(token, Review(authenticated=False, error="invalid bearer token"))


def authenticator(reviewer: FakeReviewer, **kwargs: Any) -> EventsAuthenticator:
    return EventsAuthenticator(AUDIENCE, [SENDER], reviewer, **kwargs)


# --------------------------------------------------------------------------
# Settings and the command line
# --------------------------------------------------------------------------


STATIC = {"TRM_SRE_WEBHOOK_TOKEN": "static"}


def settings(*flags: str, environ: dict[str, str] | None = None) -> Settings:
    """`trm-sre run FLAGS` in cluster mode on 0.0.0.0, as the CLI builds its settings."""
    args = cli.build_parser().parse_args(["run", "--host", "0.0.0.0", "--state-dir", "/tmp/x", *flags])
    return Settings.load(cli.settings_values(args), STATIC if environ is None else environ)


def oidc(audience: str, *subjects: str) -> KnativeOIDC:
    return KnativeOIDC(audience=audience, allowed_subjects=subjects)


def test_the_audience_and_subjects_come_from_flags_or_the_environment() -> None:
    assert not settings().knative.enabled
    flags = settings(
        "--events-audience",
        AUDIENCE,
        *("--events-allowed-subject", SENDER) * 1,
        "--events-allowed-subject",
        OTHER,
        "--events-allowed-subject",
        SENDER,
    )
    assert flags.knative == oidc(AUDIENCE, SENDER, OTHER)
    env = {**STATIC, "TRM_SRE_KNATIVE__AUDIENCE": AUDIENCE, "TRM_SRE_KNATIVE__ALLOWED_SUBJECTS": f" {SENDER} ,{OTHER},"}
    assert settings(environ=env).knative == oidc(AUDIENCE, SENDER, OTHER)
    # Flags win over the environment.
    both = settings("--events-audience", "other-aud", "--events-allowed-subject", OTHER, environ=env)
    assert both.knative == oidc("other-aud", OTHER)


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (["--events-audience", AUDIENCE], STATIC, "needs at least one --events-allowed-subject"),
        (["--events-allowed-subject", SENDER], STATIC, "need an audience"),
        (["--events-audience", "two words", "--events-allowed-subject", SENDER], STATIC, "is not a valid audience"),
        (
            ["--events-audience", AUDIENCE, "--events-allowed-subject", "mt-broker-filter"],
            STATIC,
            "is not a ServiceAccount username",
        ),
        (
            ["--events-audience", AUDIENCE, "--events-allowed-subject", "system:serviceaccount:knative-eventing"],
            STATIC,
            "system:serviceaccount:NAMESPACE:NAME",
        ),
        (
            ["--events-audience", AUDIENCE, "--events-allowed-subject", SENDER, "--standalone"],
            STATIC,
            "needs cluster mode",
        ),
        (
            ["--events-audience", AUDIENCE, "--events-allowed-subject", SENDER, "--host", "127.0.0.1"],
            {},
            "needs the bearer token too",
        ),
    ],
    ids=["no-subject", "no-audience", "spaces", "bare-name", "no-name", "standalone", "no-static-token"],
)
def test_incomplete_or_invalid_settings_are_refused_at_start(
    flags: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        settings(*flags, environ=environ)


def test_the_cli_refuses_the_option_in_standalone_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--standalone", "--events-audience", AUDIENCE, "--events-allowed-subject", SENDER])
    assert code == 2
    assert "--events-audience needs cluster mode" in capsys.readouterr().err


def test_the_cli_parses_repeated_subjects() -> None:
    args = cli.build_parser().parse_args(
        ["run", "--events-audience", AUDIENCE, "--events-allowed-subject", SENDER, "--events-allowed-subject", OTHER]
    )
    assert cli.settings_values(args)["knative"] == {"audience": AUDIENCE, "allowed_subjects": [SENDER, OTHER]}


# --------------------------------------------------------------------------
# The authenticator
# --------------------------------------------------------------------------


async def test_an_accepted_token_is_reviewed_once_then_remembered() -> None:
    reviewer = FakeReviewer()
    token = reviewer.accept(jwt())
    auth = authenticator(reviewer)
    assert [await auth.authenticate(token) for _ in range(5)] == [True] * 5
    assert reviewer.calls == 1


async def test_concurrent_requests_with_one_token_share_one_review() -> None:
    reviewer = FakeReviewer()
    token = reviewer.accept(jwt())
    reviewer.gate = threading.Event()
    auth = authenticator(reviewer)
    tasks = [asyncio.create_task(auth.authenticate(token)) for _ in range(20)]
    await asyncio.sleep(0.05)
    reviewer.gate.set()
    assert await asyncio.gather(*tasks) == [True] * 20
    assert reviewer.calls == 1


async def test_concurrent_requests_share_an_error_too_and_it_is_not_remembered() -> None:
    reviewer = FakeReviewer()
    token = reviewer.accept(jwt())
    reviewer.gate = threading.Event()
    reviewer.fail = ReviewUnavailable("the apiserver did not answer")
    auth = authenticator(reviewer)
    tasks = [asyncio.create_task(auth.authenticate(token)) for _ in range(5)]
    await asyncio.sleep(0.05)
    reviewer.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ReviewUnavailable) for r in results), results
    assert reviewer.calls == 1
    reviewer.fail, reviewer.gate = None, None
    assert await auth.authenticate(token) is True  # asked again: an error was never taken for an answer
    assert reviewer.calls == 2


async def test_any_reviewer_failure_is_unavailable_never_an_acceptance() -> None:
    reviewer = FakeReviewer()
    token = reviewer.accept(jwt())
    reviewer.fail = RuntimeError("boom")
    auth = authenticator(reviewer)
    for _ in range(2):
        with pytest.raises(ReviewUnavailable):
            await auth.authenticate(token)
    assert reviewer.calls == 2


@pytest.mark.parametrize(
    ("username", "audiences"),
    [(OTHER, (AUDIENCE,)), (SENDER, ("https://kubernetes.default.svc",)), (SENDER, ())],
    ids=["other-subject", "other-audience", "no-audience"],
)
async def test_refusals_are_false_and_remembered_briefly(username: str, audiences: tuple[str, ...]) -> None:
    # Issue #13.6: a refusal is remembered for negative_ttl_s, so a flood of one bad token costs one review.
    now = [1000.0]
    reviewer = FakeReviewer()
    token = reviewer.accept(jwt(), username=username, audiences=audiences)
    auth = authenticator(reviewer, clock=lambda: now[0])
    assert await auth.authenticate(token) is False
    for _ in range(100):
        assert await auth.authenticate(token) is False
    assert reviewer.calls == 1
    now[0] += 11  # past the 10 s negative TTL: asked again
    assert await auth.authenticate(token) is False
    assert reviewer.calls == 2


async def test_reviews_in_flight_are_bounded() -> None:
    reviewer = FakeReviewer()
    reviewer.gate = threading.Event()
    auth = authenticator(reviewer, max_pending=2)
    waiting = [asyncio.create_task(auth.authenticate(jwt(nonce=f"n{i}"))) for i in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(ReviewUnavailable, match="in flight"):
        await auth.authenticate(jwt(nonce="third"))
    reviewer.gate.set()
    assert await asyncio.gather(*waiting) == [False, False]
    assert reviewer.calls == 2


async def test_refusals_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    now = [1000.0]
    reviewer = FakeReviewer()
    auth = authenticator(reviewer, clock=lambda: now[0])
    for i in range(50):
        assert await auth.authenticate(jwt(nonce=f"garbage-{i}")) is False
    assert reviewer.calls == 50
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
    now[0] += 11
    assert await auth.authenticate(jwt(nonce="later")) is False
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 2 and "49 more refusals not logged" in lines[1]


@pytest.mark.parametrize(
    "token",
    ["static-token", "a.b", "a.b.c.d", "a.b.c d", "é.b.c", "a." + "b" * 20_000 + ".c", ""],
    ids=["opaque", "two-parts", "four-parts", "space", "non-ascii", "huge", "empty"],
)
async def test_what_is_not_a_jwt_is_refused_without_asking(token: str) -> None:
    reviewer = FakeReviewer()
    assert await authenticator(reviewer).authenticate(token) is False
    assert reviewer.calls == 0


async def test_remembered_for_the_ttl_at_most_and_never_past_exp() -> None:
    reviewer = FakeReviewer()
    now = [1000.0]
    wall = [1_700_000_000.0]
    auth = authenticator(reviewer, ttl_s=60, clock=lambda: now[0], wall_clock=lambda: wall[0])
    long_lived = reviewer.accept(jwt(exp=wall[0] + 3600, nonce="long"))
    short_lived = reviewer.accept(jwt(exp=wall[0] + 10, nonce="short"))
    assert await auth.authenticate(long_lived) and await auth.authenticate(short_lived)
    assert reviewer.calls == 2
    now[0] += 11  # past the short token's exp, within the TTL
    assert await auth.authenticate(long_lived) and await auth.authenticate(short_lived)
    assert reviewer.calls == 3  # only the short one was asked again
    now[0] += 60  # past the TTL
    assert await auth.authenticate(long_lived)
    assert reviewer.calls == 4


async def test_the_memory_is_bounded() -> None:
    reviewer = FakeReviewer()
    auth = authenticator(reviewer, max_entries=2)
    tokens = [reviewer.accept(jwt(nonce=str(i))) for i in range(3)]
    for token in tokens:
        assert await auth.authenticate(token)
    assert reviewer.calls == 3
    assert await auth.authenticate(tokens[2]) and await auth.authenticate(tokens[1])
    assert reviewer.calls == 3
    assert await auth.authenticate(tokens[0])  # the oldest was forgotten
    assert reviewer.calls == 4


async def test_tokens_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reviewer = FakeReviewer()
    refused = reviewer.accept(jwt(OTHER, nonce="refused"), username=OTHER)
    failing = jwt(nonce="failing")
    auth = authenticator(reviewer)
    assert await auth.authenticate(refused) is False
    assert await auth.authenticate(jwt(nonce="unknown")) is False
    reviewer.fail = ReviewUnavailable("the apiserver answered 403 Forbidden")
    with pytest.raises(ReviewUnavailable):
        await auth.authenticate(failing)
    text = caplog.text
    assert OTHER in text  # the username is named
    assert "403 Forbidden" in text
    for token in (refused, failing):
        for piece in token.split("."):
            assert piece not in text


# --------------------------------------------------------------------------
# The routes
# --------------------------------------------------------------------------


def _fired(event_id: str) -> tuple[bytes, dict[str, str]]:
    attributes = {"type": ALERT_FIRED, "source": "/tests/oidc", "id": event_id, "datacontenttype": "application/json"}
    message = to_binary_event(CloudEvent(attributes=attributes, data=fixture_payload("crashloop.json")["alerts"][0]))
    return message.body, dict(message.headers)


async def _server(start_server: StartServer) -> tuple[Any, FakeReviewer]:
    server = await start_server(token="static-token", knative=oidc(AUDIENCE, SENDER))
    reviewer = FakeReviewer()
    assert server.components.events_auth is not None
    server.components.events_auth.reviewer = reviewer
    return server, reviewer


async def test_events_accepts_the_static_token_and_an_accepted_oidc_token(start_server: StartServer) -> None:
    server, reviewer = await _server(start_server)
    token = reviewer.accept(jwt())
    body, headers = _fired("e1")
    async with server.client() as http:  # the static token: no review
        assert (await http.post("/events", content=body, headers=headers)).status_code == 202
    assert reviewer.calls == 0
    async with server.client(token=token) as http:
        for i in range(3):
            body, headers = _fired(f"k{i}")
            response = await http.post("/events", content=body, headers=headers)
            assert response.status_code == 202, response.text
    assert reviewer.calls == 1
    assert "Knative OIDC tokens for audience 'trm-sre.trm-sre.svc'" in " ".join(server.announced)


async def test_a_refused_token_gets_the_same_401_as_a_wrong_static_token(start_server: StartServer) -> None:
    server, reviewer = await _server(start_server)
    other = reviewer.accept(jwt(OTHER), username=OTHER)
    body, headers = _fired("e1")
    answers = []
    for token in ("wrong-static", other, jwt(nonce="unknown"), None):
        async with server.client(token=token) as http:
            answers.append(await http.post("/events", content=body, headers=headers))
    assert {(r.status_code, r.text, r.headers.get("www-authenticate")) for r in answers} == {
        (401, '{"detail":"unauthorized"}', "Bearer")
    }


async def test_an_unavailable_apiserver_is_503_with_retry_after(start_server: StartServer) -> None:
    server, reviewer = await _server(start_server)
    token = reviewer.accept(jwt())
    reviewer.fail = ReviewUnavailable("the apiserver did not answer")
    body, headers = _fired("e1")
    async with server.client(token=token) as http:
        response = await http.post("/events", content=body, headers=headers)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "retry later" in response.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/alertmanager", "/reason", "/approvals/0123456789abcdef", "/decisions/0123456789abcdef"]
)
async def test_other_routes_never_accept_an_oidc_token(start_server: StartServer, path: str) -> None:
    server, reviewer = await _server(start_server)
    token = reviewer.accept(jwt())
    async with server.client(token=token) as http:
        response = await (http.get(path) if path.startswith("/decisions") else http.post(path, json={}))
    assert response.status_code == 401
    assert reviewer.calls == 0


async def test_reviews_are_counted_by_result(start_server: StartServer) -> None:
    server, reviewer = await _server(start_server)
    token = reviewer.accept(jwt())
    async with server.client(token=token) as http:
        for i in range(2):
            body, headers = _fired(f"m{i}")
            await http.post("/events", content=body, headers=headers)
    async with server.client(token=jwt(nonce="x")) as http:
        body, headers = _fired("m3")
        await http.post("/events", content=body, headers=headers)
    registry = server.components.metrics.registry
    assert registry.get_sample_value("agent_sre_token_reviews_total", {"result": "accepted"}) == 1
    assert registry.get_sample_value("agent_sre_token_reviews_total", {"result": "rejected"}) == 1
