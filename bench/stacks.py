"""An all-threads stack sampler, for what pyinstrument (main thread only) cannot see.

The controller hands SQLite and the model to `asyncio.to_thread` workers; a
slow alert is often one waiting for such a worker or for the store's lock,
which shows up in no main-thread profile. Every `interval_s` this samples
`sys._current_frames()` and counts, per thread kind, where each thread is:
its innermost frame of our code (or of the library it is blocked in), so a
thread waiting on `with self._lock:` in store.py counts at that line.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import Any

_OURS = ("/controller/", "/models/", "/runbooks/")


def _kind(thread: threading.Thread | None, main_ident: int, ident: int) -> str:
    if ident == main_ident:
        return "main (event loop)"
    name = thread.name if thread is not None else "?"
    if name.startswith("asyncio_"):
        return "asyncio.to_thread workers"
    return "other threads"


def _where(frame: Any) -> tuple[str, str]:
    """(innermost frame of our code, or the innermost frame at all) as 'file:function:line', and the leaf."""
    leaf = frame
    ours = None
    f = frame
    while f is not None:
        path = f.f_code.co_filename.replace("\\", "/")
        if ours is None and any(p in path for p in _OURS):
            ours = f
        f = f.f_back
    pick = ours or leaf

    def show(fr: Any) -> str:
        path = fr.f_code.co_filename.replace("\\", "/")
        short = "/".join(path.split("/")[-2:])
        return f"{short}:{fr.f_code.co_name}:{fr.f_lineno}"

    return show(pick), show(leaf)


class StackSampler:
    """Start with `start()`, stop with `stop()`; `summary()` says where each kind of thread spent its samples."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.counts: dict[str, Counter[str]] = {}
        self.leaves: dict[str, Counter[str]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-stack-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        me = threading.get_ident()
        main = threading.main_thread().ident or 0
        while not self._stop.wait(self.interval_s):
            threads = {t.ident: t for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                kind = _kind(threads.get(ident), main, ident)
                ours, leaf = _where(frame)
                self.counts.setdefault(kind, Counter())[ours] += 1
                self.leaves.setdefault(kind, Counter())[leaf] += 1
            self.samples += 1

    def summary(self, top: int = 10) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples, "interval_s": self.interval_s, "threads": {}}
        for kind, counter in self.counts.items():
            total = sum(counter.values())
            out["threads"][kind] = {
                "thread_samples": total,
                "where_ours": [{"at": k, "share": round(v / total, 3)} for k, v in counter.most_common(top)],
                "where_leaf": [{"at": k, "share": round(v / total, 3)} for k, v in self.leaves[kind].most_common(top)],
            }
        return out
