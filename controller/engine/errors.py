"""What the engine raises to its callers (the HTTP edge answers both with 503, nothing acknowledged)."""

from __future__ import annotations


class Overloaded(Exception):
    """The work queue is full (or the engine is stopping): answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(Exception):
    """The store cannot record right now (disk full, read-only, locked, closed); nothing was acknowledged."""
