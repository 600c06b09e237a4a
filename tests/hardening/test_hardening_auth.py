"""Authentication on everything that changes state; loopback only without a token; optional mTLS.

Claims (issue #6, "Hostile input"):
- every state-changing endpoint (`/alertmanager`, `/events`, `/reason`,
  `/approvals/{id}`; and `/decisions/{id}`, whose traces hold alert data)
  refuses a missing, wrong or malformed bearer token with the same generic
  401, before it reads the body, and records nothing;
- the token comes from `TRM_SRE_WEBHOOK_TOKEN` or a mounted file and is
  compared in constant time (`hmac.compare_digest`, for every check);
- without a token the server refuses any non-loopback bind (exit 2, a clear
  message) and accepts loopback ones;
- with `--tls-cert-file/--tls-key-file/--client-ca-file` the server speaks TLS
  and requires a client certificate signed by that CA (certificates made by
  openssl in the test).
"""

from __future__ import annotations

import hmac
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.edge import config as settings_module
from controller.edge.config import BearerToken
from controller.settings import SettingsError, check_bind
from tests.hardening.support import REPO, StartServer, crashloop

TOKEN = "hardening-" + "s3cr3t" * 4

STATE_CHANGING = [
    ("POST", "/alertmanager"),
    ("POST", "/events"),
    ("POST", "/reason"),
    ("POST", "/approvals/0123456789abcdef"),
    ("GET", "/decisions/0123456789abcdef"),
]

# (id, headers): every way a request can fail to present the configured token.
BAD_CREDENTIALS: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("wrong", {"Authorization": "Bearer not-the-token"}),
    ("scheme-only", {"Authorization": "Bearer"}),
    ("basic-scheme", {"Authorization": f"Basic {TOKEN}"}),
    ("no-scheme", {"Authorization": TOKEN}),
    ("prefix", {"Authorization": f"Bearer {TOKEN[:-1]}"}),
    ("suffix", {"Authorization": f"Bearer {TOKEN}x"}),
    ("case", {"Authorization": f"Bearer {TOKEN.upper()}"}),
    ("doubled", {"Authorization": f"Bearer {TOKEN}{TOKEN}"}),
    ("huge", {"Authorization": "Bearer " + "a" * 6000}),
    ("latin1-bytes", {"Authorization": "Bearer t\xf6ken".encode("latin-1")}),
    ("utf8-bytes", {"Authorization": f"Bearer {TOKEN}\u00e9".encode()}),
    ("other-header", {"X-Api-Key": TOKEN}),
]


@pytest.fixture
async def server(controller: StartServer) -> Any:
    return await controller(token=TOKEN)


def _alerts_stored(server: Any) -> int:
    return server.rows("alerts")


@pytest.mark.parametrize(("method", "path"), STATE_CHANGING, ids=[p for _, p in STATE_CHANGING])
@pytest.mark.parametrize(("case", "headers"), BAD_CREDENTIALS, ids=[c for c, _ in BAD_CREDENTIALS])
async def test_every_state_changing_route_refuses_bad_credentials_alike(
    server: Any, method: str, path: str, case: str, headers: dict[str, Any]
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.request(method, path, headers=headers, json=crashloop())
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": "unauthorized"}  # the same words whatever was wrong
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text


async def test_the_token_in_the_query_string_is_not_accepted(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for name in ("token", "access_token", "authorization"):
            response = await http.post("/alertmanager", params={name: TOKEN}, json=crashloop())
            assert response.status_code == 401


async def test_an_unauthenticated_request_is_refused_before_its_body_is_read(server: Any) -> None:
    """Neither parse errors nor limits tell an unauthenticated sender anything; nothing is stored."""
    bodies = [b"{not json", b"[1]", b'{"alerts": "x"}', b"x" * (5 * 1024 * 1024)]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for body in bodies:
            response = await http.post("/alertmanager", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 401, body[:20]
            response = await http.post(
                "/events", content=body, headers={"content-type": "application/cloudevents+json"}
            )
            assert response.status_code == 401, body[:20]
    assert _alerts_stored(server) == 0


async def test_refused_requests_record_nothing_and_the_right_token_works(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for _, headers in BAD_CREDENTIALS:
            assert (await http.post("/alertmanager", headers=headers, json=crashloop())).status_code == 401
        assert _alerts_stored(server) == 0
        good = await http.post("/alertmanager", headers={"Authorization": f"Bearer {TOKEN}"}, json=crashloop())
    assert good.status_code == 200
    assert _alerts_stored(server) == 1


async def test_every_check_compares_in_constant_time(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is `hmac.compare_digest` on bytes, for wrong and right tokens alike."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(settings_module.hmac, "compare_digest", spy)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for presented in ("wrong", TOKEN[:-1], TOKEN):
            await http.post(
                "/reason",
                headers={"Authorization": f"Bearer {presented}"},
                json={"context": {"labels": {"alertname": "X"}}},
            )
    assert [a for a, _ in calls] == [b"wrong", TOKEN[:-1].encode(), TOKEN.encode()]
    assert all(isinstance(a, bytes) and b == TOKEN.encode() for a, b in calls)


async def test_the_token_may_come_from_a_mounted_file(controller: StartServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # as `kubectl create secret --from-file` or `echo` leaves it
    server = await controller(token_file=token_file)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.post("/alertmanager", json=crashloop())).status_code == 401
        ok = await http.post("/alertmanager", headers={"Authorization": f"Bearer {TOKEN}"}, json=crashloop())
    assert ok.status_code == 200


def test_a_token_file_that_disappears_fails_closed(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token = BearerToken(file=token_file)
    assert token.check(TOKEN)
    token_file.unlink()
    assert not token.check(TOKEN)
    assert not token.check("")
    assert not token.check(None)


# ----------------------------------------------------------------------------- loopback only without a token


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "10.0.0.1", "example.com", "127.0.0.1.nip.io"])
def test_without_a_token_only_loopback_binds_are_allowed(host: str) -> None:
    with pytest.raises(SettingsError, match=f"refusing to listen on {re.escape(host)} without authentication"):
        check_bind(host, BearerToken(value=None))
    check_bind(host, BearerToken(value=TOKEN))  # with a token anything goes


@pytest.mark.parametrize("host", ["127.0.0.1", "127.10.0.1", "::1", "[::1]", "localhost"])
def test_loopback_binds_need_no_token(host: str) -> None:
    check_bind(host, BearerToken(value=None))


def _run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("TRM_SRE_WEBHOOK_TOKEN", "K_SINK", "KUBECONFIG")}
    environ.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=REPO,
        env=environ,
        text=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_the_cli_refuses_an_open_bind_without_a_token_and_exits_non_zero(host: str, tmp_path: Path) -> None:
    result = _run_cli("run", "--standalone", "--no-model", "--host", host, "--port", "0", "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"refusing to listen on {host} without authentication" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened


def test_an_empty_token_variable_counts_as_no_token(tmp_path: Path) -> None:
    result = _run_cli(
        "run",
        "--standalone",
        "--no-model",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path),
        env={"TRM_SRE_WEBHOOK_TOKEN": ""},
    )
    assert result.returncode == 2
    assert "without authentication" in result.stderr


def test_an_empty_token_file_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    result = _run_cli(
        "run",
        "--standalone",
        "--no-model",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
        "--token-file",
        str(tmp_path / "token"),
    )
    assert result.returncode == 2
    assert "empty or unreadable" in result.stderr


# ----------------------------------------------------------------------------- mTLS


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    return key, cert


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (directory / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    ext.write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={name}",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[1]),
        "-CAkey",
        str(ca[0]),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is a prerequisite of the test suite (README) and is missing")
    d = tmp_path_factory.mktemp("pki")
    ca = _ca(d, "clients-ca")
    other_ca = _ca(d, "other-ca")
    server_key, server_cert = _leaf(
        d, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    client_key, client_cert = _leaf(d, "alertmanager", ca, "extendedKeyUsage=clientAuth\n")
    rogue_key, rogue_cert = _leaf(d, "rogue", other_ca, "extendedKeyUsage=clientAuth\n")
    return {
        "ca": ca[1],
        "server_key": server_key,
        "server_cert": server_cert,
        "client_key": client_key,
        "client_cert": client_cert,
        "rogue_key": rogue_key,
        "rogue_cert": rogue_cert,
    }


_LISTENING = re.compile(r"trm-sre listening on (https?)://([0-9.]+):([0-9]+)")


class _Child:
    """`trm-sre run` in its own process group; the URL is read from the line it prints once it listens."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        environ = {k: v for k, v in os.environ.items() if k not in ("TRM_SRE_WEBHOOK_TOKEN", "K_SINK", "KUBECONFIG")}
        environ.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **env})
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "controller", "run", *args],
                cwd=REPO,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_listening(self, timeout: float = 120) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log.read_text(errors="replace"))
            if match:
                return match.group(1), int(match.group(3))
            if self.popen.poll() is not None:
                raise AssertionError(f"trm-sre exited with {self.popen.returncode}:\n{self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"trm-sre did not listen:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                return self.popen.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode


def _client_context(pki: dict[str, Path], cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if cert is not None:
        context.load_cert_chain(str(pki[f"{cert}_cert"]), str(pki[f"{cert}_key"]))
    return context


def _handshake_refused(url: str, context: ssl.SSLContext) -> bool:
    """True when the server will not complete a request without an acceptable client certificate."""
    try:
        httpx.get(url, verify=context, timeout=15)
    except (httpx.TransportError, ssl.SSLError):
        return True
    return False


def test_mtls_requires_a_client_certificate_from_the_configured_ca(pki: dict[str, Path], tmp_path: Path) -> None:
    child = _Child(
        [
            "--standalone",
            "--no-model",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
            "--tls-cert-file",
            str(pki["server_cert"]),
            "--tls-key-file",
            str(pki["server_key"]),
            "--client-ca-file",
            str(pki["ca"]),
        ],
        {"TRM_SRE_WEBHOOK_TOKEN": TOKEN},
        tmp_path / "trm-sre.log",
    )
    try:
        scheme, port = child.wait_listening()
        assert scheme == "https"
        base = f"https://127.0.0.1:{port}"
        # No client certificate, or one from another CA: the TLS handshake fails, nothing is served.
        assert _handshake_refused(f"{base}/healthz", _client_context(pki, None))
        assert _handshake_refused(f"{base}/healthz", _client_context(pki, "rogue"))
        # Plain HTTP to the TLS port is not served either.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=15).raise_for_status()
        # With the CA's client certificate: served, and the bearer token is still checked.
        trusted = _client_context(pki, "client")
        assert httpx.get(f"{base}/healthz", verify=trusted, timeout=15).status_code == 200
        refused = httpx.post(f"{base}/alertmanager", json=crashloop(), verify=trusted, timeout=15)
        assert refused.status_code == 401
        accepted = httpx.post(
            f"{base}/alertmanager",
            json=crashloop(),
            verify=trusted,
            timeout=15,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert accepted.status_code == 200, accepted.text
    finally:
        assert child.stop() == 0, child.log.read_text()


def test_tls_without_a_client_ca_serves_https_to_any_client(pki: dict[str, Path], tmp_path: Path) -> None:
    child = _Child(
        [
            "--standalone",
            "--no-model",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
            "--tls-cert-file",
            str(pki["server_cert"]),
            "--tls-key-file",
            str(pki["server_key"]),
        ],
        {},
        tmp_path / "trm-sre.log",
    )
    try:
        scheme, port = child.wait_listening()
        assert scheme == "https"
        response = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=_client_context(pki, None), timeout=15)
        assert response.status_code == 200
    finally:
        assert child.stop() == 0, child.log.read_text()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--tls-cert-file", "{server_cert}"], "--tls-key-file"),
        (["--tls-key-file", "{server_key}"], "--tls-cert-file"),
        (["--client-ca-file", "{ca}"], "--tls-cert-file"),
        (["--tls-cert-file", "{missing}", "--tls-key-file", "{server_key}"], "does not exist"),
        (["--tls-cert-file", "{server_key}", "--tls-key-file", "{server_key}"], "--tls-cert-file"),
    ],
    ids=["cert-without-key", "key-without-cert", "ca-without-cert", "missing-file", "not-a-certificate"],
)
def test_incomplete_or_broken_tls_settings_are_refused_at_start(
    pki: dict[str, Path], tmp_path: Path, flags: list[str], expected: str
) -> None:
    paths = {**{k: str(v) for k, v in pki.items()}, "missing": str(tmp_path / "missing.pem")}
    args = [f.format(**paths) for f in flags]
    result = _run_cli("run", "--standalone", "--no-model", "--port", "0", "--state-dir", str(tmp_path / "s"), *args)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
