"""Settings: the token (with rotation), the loopback rule, K_CE_OVERRIDES, policy files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.app import PolicyFileError, build_components, load_policy_files, standalone_policies
from controller.edge.config import BearerToken
from controller.engine.model_loader import ModelState
from controller.settings import Settings, SettingsError, check_bind, is_loopback, parse_ce_overrides
from controller.tools import cli


def settings(*flags: str, environ: dict[str, str] | None = None, standalone: bool = True) -> Settings:
    """`trm-sre run FLAGS`, as the CLI builds its settings, over `environ` (default: empty)."""
    argv = ["run", "--no-model", *(["--standalone"] if standalone else []), *flags]
    if "--state-dir" not in flags:
        argv += ["--state-dir", "/tmp/x"]
    return Settings.load(cli.settings_values(cli.build_parser().parse_args(argv)), environ or {})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_addresses_are_recognised(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com", ""])
def test_other_addresses_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_binding_beyond_loopback_without_a_token_is_refused() -> None:
    with pytest.raises(SettingsError, match="refusing to listen on 0.0.0.0 without authentication"):
        check_bind("0.0.0.0", BearerToken())
    check_bind("0.0.0.0", BearerToken(value="s3cret"))  # with a token it is fine
    check_bind("127.0.0.1", BearerToken())


def test_token_comes_from_the_environment() -> None:
    loaded = settings("--host", "0.0.0.0", environ={"TRM_SRE_WEBHOOK_TOKEN": "abc\n"})
    assert loaded.token.check("abc")
    assert not loaded.token.check("abd")
    assert not loaded.token.check(None)


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    token = BearerToken(file=path)
    assert token.check("first")
    path.write_text("second-token\n")  # a different size: noticed even within one mtime tick
    os.utime(path, ns=(1, 1))
    assert token.check("second-token")
    assert not token.check("first")


def test_a_missing_token_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t")
    token = BearerToken(file=path)
    path.unlink()
    assert token.configured
    assert not token.check("t")


def test_token_file_must_exist_at_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        settings("--token-file", str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="empty"):
        settings("--token-file", str(empty))


def test_sink_comes_from_k_sink_unless_given() -> None:
    assert settings(environ={"K_SINK": "http://broker/ns/b"}).engine.sink == "http://broker/ns/b"
    assert settings("--sink", "http://x", environ={"K_SINK": "http://y"}).engine.sink == "http://x"
    loaded = settings("--state-dir", "/tmp/state")
    assert loaded.engine.sink is None
    assert loaded.trigger_destination == "file /tmp/state/triggers.jsonl"
    with pytest.raises(SettingsError, match="http"):
        settings("--sink", "ftp://nope")
    with pytest.raises(SettingsError, match="TRM_SRE_ENGINE__SINK"):
        settings("--sink", "http://x\n")  # a full match: a trailing newline is not a URL


def test_ce_overrides_are_parsed_and_checked() -> None:
    assert parse_ce_overrides(None) == {}
    assert parse_ce_overrides("") == {}
    assert parse_ce_overrides('{"extensions": {"extra": "x", "additional": 42}}') == {"extra": "x", "additional": "42"}
    for bad in ('{"extensions": {"bad-name": "x"}}', '{"extensions": {"type": "x"}}', "not json", "[1]"):
        with pytest.raises(SettingsError, match="K_CE_OVERRIDES"):
            parse_ce_overrides(bad)


def test_policies_need_standalone(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("")
    with pytest.raises(SettingsError, match="--standalone"):
        settings("--policies", str(path), standalone=False)


POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {{name: {name}}}
spec:
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - match: {{alertNames: [KubePodCrashLooping]}}
          function: pod-restart
          parameters: {{name: "{{{{ $labels.pod }}}}", namespace: "{{{{ $labels.namespace }}}}"}}
"""


def test_policy_files_hold_several_documents(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICY.format(name="one") + "---\n" + POLICY.format(name="two") + "---\n")
    policies = load_policy_files([path])
    assert [p.key for p in policies] == ["default/one", "default/two"]


def test_invalid_policy_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(POLICY.format(name="one").replace("allowedFunctions", "allowedFunctionz"))
    with pytest.raises(PolicyFileError, match=r"bad.yaml document 1.*allowedFunctionz"):
        load_policy_files([path])
    path.write_text(POLICY.format(name="one") + "---\n" + POLICY.format(name="one"))
    with pytest.raises(PolicyFileError, match="defined twice"):
        load_policy_files([path])


def test_no_policy_files_means_the_embedded_default() -> None:
    (policy,) = standalone_policies(())
    assert policy.spec.priority == -1000


def test_retention_days_come_from_the_flag_then_the_environment_then_30() -> None:
    assert settings().engine.retention_days == 30
    assert settings(environ={"TRM_SRE_ENGINE__RETENTION_DAYS": " 7\n"}).engine.retention_days == 7
    flag_wins = settings("--retention-days", "90", environ={"TRM_SRE_ENGINE__RETENTION_DAYS": "7"})
    assert flag_wins.engine.retention_days == 90
    assert settings("--retention-days", "0").engine.retention_days == 0  # keep everything


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (
            ["--retention-days", "-1"],
            {},
            "engine.retention_days .TRM_SRE_ENGINE__RETENTION_DAYS.: .*greater than or equal to 0",
        ),
        (["--retention-days", "100000"], {}, "engine.retention_days .* less than or equal to 36500"),
        ([], {"TRM_SRE_ENGINE__RETENTION_DAYS": "2.5"}, "TRM_SRE_ENGINE__RETENTION_DAYS.: .*integer"),
        ([], {"TRM_SRE_ENGINE__RETENTION_DAYS": "-3"}, "TRM_SRE_ENGINE__RETENTION_DAYS.: .*greater than or equal to 0"),
        ([], {"TRM_SRE_PORT": "70000"}, "port .TRM_SRE_PORT.: .*less than 65536"),
        ([], {"TRM_SRE_LIMITS__MAX_BODY_BYTES": "10"}, "limits.max_body_bytes .*greater than or equal to 1024"),
    ],
)
def test_invalid_settings_are_refused_by_name(flags: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings(*flags, environ=environ)


def test_every_section_reads_the_environment() -> None:
    loaded = settings(
        environ={
            "TRM_SRE_ENGINE__QUEUE_SIZE": "17",
            "TRM_SRE_LIMITS__MAX_ALERTS": "9",
            "TRM_SRE_MODEL__DEVICE": "auto",
            "TRM_SRE_LOG_LEVEL": "debug",
            "K_CE_OVERRIDES": '{"extensions": {"cluster": "c1"}}',
        }
    )
    assert (loaded.engine.queue_size, loaded.limits.max_alerts, loaded.model.device) == (17, 9, "auto")
    assert loaded.log_level == "DEBUG"
    assert loaded.engine.ce_overrides == {"cluster": "c1"}


def test_run_passes_retention_days_to_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import controller.app
    import controller.observability.logging

    seen: list[Settings] = []

    async def fake_run_controller(settings: Settings, announce: object = None) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(controller.app, "run_controller", fake_run_controller)
    monkeypatch.setattr(
        controller.observability.logging, "configure_logging", lambda level: None
    )  # keep pytest's handlers
    monkeypatch.delenv("TRM_SRE_ENGINE__RETENTION_DAYS", raising=False)
    argv = ["run", "--standalone", "--no-model", "--state-dir", str(tmp_path)]
    assert cli.main([*argv, "--retention-days", "7"]) == 0
    assert cli.main(argv) == 0
    assert [s.engine.retention_days for s in seen] == [7, 30]
    assert cli.main([*argv, "--retention-days", "-1"]) == 2

    components = build_components(seen[0], model=ModelState(None, "disabled", "tests"))
    try:
        assert components.pipeline._settings.retention_days == 7
    finally:
        components.store.close()
        asyncio.run(components.http.aclose())
