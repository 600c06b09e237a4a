"""Whether the engine runs and whether it is stopping: set by `Pipeline.start`/`stop`, read by its parts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lifecycle:
    #: From the end of `Pipeline.start()` to the end of `Pipeline.stop()`; until then delivery is left to
    #: the outbox loop.
    running: bool = False
    #: From the beginning of `Pipeline.stop()` until the next start: new alerts are refused, sweeps end early.
    stopping: bool = False
