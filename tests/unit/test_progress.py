"""The progress helper: a bar only for a person at a terminal; nothing in CI, in logs or with --quiet."""

from __future__ import annotations

import io
import sys

import pytest

from models.progress import Progress, in_ci, interactive


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drive(stream: io.StringIO, **kwargs: object) -> Progress:
    with Progress(3, "train trm", unit="batch", stream=stream, **kwargs) as bar:  # type: ignore[arg-type]
        for _ in range(3):
            bar.update(1, loss="0.123")
    return bar


def test_silent_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = _drive(stream, env={})
    assert not bar.enabled and stream.getvalue() == ""


@pytest.mark.parametrize("ci", ["true", "1", "yes", "True", "anything"])
def test_silent_in_ci_even_on_a_terminal(ci: str) -> None:
    stream = FakeTTY()
    bar = _drive(stream, env={"CI": ci})
    assert not bar.enabled and stream.getvalue() == ""


def test_silent_with_quiet() -> None:
    stream = FakeTTY()
    assert not _drive(stream, env={}, quiet=True).enabled and stream.getvalue() == ""


@pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"CI": "0"}, {"CI": ""}])
def test_renders_on_a_terminal_outside_ci(env: dict[str, str]) -> None:
    stream = FakeTTY()
    assert _drive(stream, env=env).enabled
    out = stream.getvalue()
    assert "train trm" in out and "3/3" in out and "batch" in out and "loss=0.123" in out
    assert "\r" in out  # redrawn in place: a bar, not a log


def test_the_process_environment_decides_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert in_ci() and not interactive(FakeTTY())
    monkeypatch.delenv("CI")
    assert not in_ci() and interactive(FakeTTY()) and not interactive(io.StringIO())


def test_a_stream_without_isatty_counts_as_not_a_terminal() -> None:
    assert not interactive(object(), env={})  # type: ignore[arg-type]


def test_lines_printed_to_stderr_go_above_the_bar_and_stderr_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTTY()
    monkeypatch.setattr(sys, "stderr", terminal)
    with Progress(2, "bench", unit="section", env={}) as bar:
        assert sys.stderr is not terminal  # lines are routed through the bar while it is shown
        bar.set_description("bench: selection")
        print("bench: selection ...", file=sys.stderr)
        bar.update()
        print("partial", end="", file=sys.stderr)
    assert sys.stderr is terminal
    out = terminal.getvalue()
    assert "bench: selection ...\n" in out and out.endswith("partial")
    assert "bench: selection:" in out  # the description changed


def test_a_disabled_bar_leaves_stderr_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    with Progress(2, "eval", env={}) as bar:
        assert sys.stderr is plain
        bar.set_description("x")
        bar.update(2)
    assert plain.getvalue() == ""
