"""Settings: the token (with rotation), the loopback rule, K_CE_OVERRIDES, policy files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.app import ModelState, PolicyFileError, build_components, load_policy_files, standalone_policies
from controller.settings import (
    BearerToken,
    RunSettings,
    SettingsError,
    check_bind,
    is_loopback,
    parse_ce_overrides,
    settings_from_args,
)


def _args(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "standalone": True, "policy_files": None, "host": "127.0.0.1", "port": 8080, "state_dir": "/tmp/x",
        "token_file": None, "namespaces": None, "device": "cpu", "no_model": True, "checkpoint": None, "sink": None,
        "liveness_port": 8081, "log_level": "info", "environ": {},
    }
    args.update(overrides)
    return args


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
    settings = settings_from_args(**_args(host="0.0.0.0", environ={"TRM_SRE_WEBHOOK_TOKEN": "abc\n"}))
    assert settings.token.check("abc")
    assert not settings.token.check("abd")
    assert not settings.token.check(None)


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
        settings_from_args(**_args(token_file=str(tmp_path / "nope")))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="empty"):
        settings_from_args(**_args(token_file=str(empty)))


def test_sink_comes_from_k_sink_unless_given() -> None:
    assert settings_from_args(**_args(environ={"K_SINK": "http://broker/ns/b"})).sink == "http://broker/ns/b"
    assert settings_from_args(**_args(sink="http://x", environ={"K_SINK": "http://y"})).sink == "http://x"
    settings = settings_from_args(**_args(state_dir="/tmp/state"))
    assert settings.sink is None
    assert settings.trigger_destination == "file /tmp/state/triggers.jsonl"
    with pytest.raises(SettingsError, match="http"):
        settings_from_args(**_args(sink="ftp://nope"))


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
        settings_from_args(**_args(standalone=False, policy_files=[str(path)]))


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
    assert settings_from_args(**_args()).retention_days == 30
    assert settings_from_args(**_args(environ={"TRM_SRE_RETENTION_DAYS": " 7\n"})).retention_days == 7
    assert settings_from_args(**_args(environ={"TRM_SRE_RETENTION_DAYS": ""})).retention_days == 30
    flag_wins = _args(retention_days=90, environ={"TRM_SRE_RETENTION_DAYS": "7"})
    assert settings_from_args(**flag_wins).retention_days == 90
    assert settings_from_args(**_args(retention_days=0)).retention_days == 0  # keep everything


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"retention_days": -1}, "--retention-days -1 must be between 0"),
        ({"retention_days": 100_000}, "--retention-days 100000 must be between 0"),
        ({"environ": {"TRM_SRE_RETENTION_DAYS": "2.5"}}, "TRM_SRE_RETENTION_DAYS '2.5' is not a whole number"),
        ({"environ": {"TRM_SRE_RETENTION_DAYS": "-3"}}, "TRM_SRE_RETENTION_DAYS -3 must be between 0"),
    ],
)
def test_invalid_retention_days_are_refused_by_name(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_from_args(**_args(**overrides))


def test_run_passes_retention_days_to_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import controller.app
    import controller.observability.logging
    from controller.tools import cli as cli

    seen: list[RunSettings] = []

    async def fake_run_controller(settings: RunSettings, announce: object = None) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(controller.app, "run_controller", fake_run_controller)
    monkeypatch.setattr(controller.observability.logging, "configure_logging", lambda level: None)  # keep pytest's handlers
    monkeypatch.delenv("TRM_SRE_RETENTION_DAYS", raising=False)
    argv = ["run", "--standalone", "--no-model", "--state-dir", str(tmp_path)]
    assert cli.main([*argv, "--retention-days", "7"]) == 0
    assert cli.main(argv) == 0
    assert [s.retention_days for s in seen] == [7, 30]
    assert cli.main([*argv, "--retention-days", "-1"]) == 2

    components = build_components(seen[0], model=ModelState(None, "disabled", "tests"))
    try:
        assert components.pipeline._settings.retention_days == 7
    finally:
        components.store.close()
        asyncio.run(components.http.aclose())
