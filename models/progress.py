"""Progress bars for long work (training, evaluation, benchmarks) that stay out of CI logs.

A bar is drawn on stderr only when a person is watching: stderr is a terminal,
`CI` is unset (or false) and the command was not given `--quiet`. Otherwise
`Progress` draws nothing: log files and CI output keep only the plain lines the
commands print themselves.

    with Progress(total=len(rows), desc="eval trm", unit="alert", quiet=args.quiet) as bar:
        for batch in batches:
            ...
            bar.update(len(batch), loss=f"{loss:.3f}")

While a bar is drawn on the process's stderr, lines printed to `sys.stderr`
go above the bar instead of through it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TextIO

_FALSE = ("", "0", "false", "no", "off")


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """`CI` is set to anything but an explicit false (GitHub Actions, GitLab and most others set CI=true)."""
    return (os.environ if env is None else env).get("CI", "").strip().lower() not in _FALSE


def interactive(stream: TextIO | None = None, *, quiet: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """Whether a progress bar should be drawn on `stream` (default: stderr)."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        tty = False
    return tty and not quiet and not in_ci(env)


class Progress:
    """A tqdm bar when `interactive(...)`, else a no-op with the same methods."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        quiet: bool = False,
        stream: TextIO | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = interactive(self.stream, quiet=quiet, env=env)
        self._bar: Any = None
        self._proxy: Any = None
        if not self.enabled:
            return
        from tqdm import tqdm
        from tqdm.contrib import DummyTqdmFile

        self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, leave=True)
        if self.stream is sys.stderr:
            self._proxy = sys.stderr = DummyTqdmFile(self.stream)  # type: ignore[assignment]

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by `n`; keyword arguments are shown after the bar (`loss=0.123`)."""
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(n)

    def set_description(self, desc: str) -> None:
        if self._bar is not None:
            self._bar.set_description(desc)

    def close(self) -> None:
        """Leave the finished bar on screen and give `sys.stderr` back."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._proxy is not None:
            if sys.stderr is self._proxy:
                sys.stderr = self.stream
            pending, self._proxy._buf = "".join(self._proxy._buf), []  # a last line without its newline
            self.stream.write(pending)
            self._proxy = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
