"""Summaries that survive a noisy machine: percentiles, ratios to a baseline, growth classes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def percentile_counting_missing(values: Sequence[float], missing: int, q: float) -> float | None:
    """The q-th percentile of `values` plus `missing` values larger than any (never arrived); None when it is one."""
    n = len(values) + missing
    if n == 0:
        return None
    k = (n - 1) * q / 100.0
    if math.ceil(k) >= len(values):
        return None
    return percentile([*values, *([max(values)] * missing)], q) if missing else percentile(values, q)


def summarize(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """n, p50, p90, p99, mean, max of a sample (milliseconds by convention)."""
    if not values:
        return {"n": 0, "min": None, "p50": None, "p90": None, "p99": None, "mean": None, "max": None}

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "n": len(values),
        "min": r(min(values)),
        "p50": r(percentile(values, 50)),
        "p90": r(percentile(values, 90)),
        "p99": r(percentile(values, 99)),
        "mean": r(sum(values) / len(values)),
        "max": r(max(values)),
    }


def ratio(value: float | None, baseline: float | None, digits: int = 2) -> float | None:
    if value is None or baseline is None or baseline <= 0:
        return None
    return round(value / baseline, digits)


def time_calls(
    call: Callable[[], Any], *, min_calls: int = 5, min_seconds: float = 0.2, max_calls: int = 100_000
) -> list[float]:
    """Per-call wall times in milliseconds: at least `min_calls`, and at least `min_seconds` in all.

    Tiny operations (a policy lookup is microseconds) are timed in groups so
    the clock's own cost does not dominate; each sample is a group's mean.
    """
    t0 = time.perf_counter()
    call()
    single = time.perf_counter() - t0
    group = max(1, int(0.002 / single)) if single > 0 else 1000  # about 2 ms per sample
    samples: list[float] = []
    started = time.perf_counter()
    calls = 0
    while (len(samples) < min_calls or time.perf_counter() - started < min_seconds) and calls < max_calls:
        t0 = time.perf_counter()
        for _ in range(group):
            call()
        samples.append((time.perf_counter() - t0) * 1000 / group)
        calls += group
    return samples


def growth(ns: Sequence[float], costs: Sequence[float | None]) -> dict[str, Any]:
    """How cost grows with n: the log-log slope over the upper half of the range, and its class.

    The slope is fitted on the larger sizes only, because at small n a
    constant overhead hides the term that grows. Classes: slope < 0.2 is
    O(1) (flat), < 0.6 sub-linear (a constant part still dominates), < 1.3
    O(n), else worse than linear.
    """
    points = [(n, c) for n, c in zip(ns, costs) if c is not None and c > 0 and n > 0]
    if len(points) < 2:
        return {"slope": None, "class": "n/a"}
    upper = points[len(points) // 2 - (1 if len(points) % 2 == 0 else 0) :] if len(points) > 3 else points
    xs = [math.log(n) for n, _ in upper]
    ys = [math.log(c) for _, c in upper]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    if slope < 0.2:
        cls = "O(1)"
    elif slope < 0.6:
        cls = "sub-linear (constant part dominates)"
    elif slope < 1.3:
        cls = "O(n)"
    else:
        cls = "worse than O(n)"
    first, last = points[0][1], points[-1][1]
    return {"slope": round(slope, 2), "class": cls, "last_over_first": round(last / first, 2)}
