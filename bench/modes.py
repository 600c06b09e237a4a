"""How big each measurement is in quick, full and smoke mode (one place, so the report can say it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Mode:
    name: str
    # selection: alerts per selector (latency and accuracy), alerts per sweep point (batch-1 latency),
    # alerts for the sweeps' accuracy (batched), supervision steps swept
    selection_alerts: int
    sweep_latency_alerts: int
    sweep_accuracy_alerts: int
    sweep_max_steps: int  # forced supervision steps 1..this
    recursion_grid: tuple[tuple[int, int], ...]  # (n latent updates, T recursions) pairs
    halt_thresholds: tuple[float, ...]  # > 1 means "never halt early"
    footprint: bool  # measure each model's RSS in a fresh process
    # end to end
    rates: tuple[int, ...]
    phase_seconds: float
    storm_alerts: int
    max_phase: bool
    max_rate: int
    max_seconds: float
    max_drain_wait_s: float
    drain_wait_s: float
    burst_runs: int  # the 500/s phase runs this many times in a row (issue #14: >= 95% accepted in each of 3)
    # saturation curve (trm-sre and the floor, a fresh process per level): offered alerts/s, seconds of load
    # per level, and how long after the last send triggers still count
    saturation_levels: tuple[int, ...]
    saturation_seconds: float
    saturation_wait_s: float
    # scale curves: points per curve and the time spent per point
    scale_seconds_per_point: float
    batch_sizes: tuple[int, ...]
    # cold start repetitions; operator cold start against the test apiserver
    coldstart_repeats: int
    operator_coldstart: bool
    operator_policies: int
    # profile at 100 alerts/s
    profile_seconds: float
    # runtimes: seconds at 100 alerts/s before the controller's RSS is read (issue #14 says 60 s)
    runtimes_load_s: float
    # the controller in the end-to-end test loads the model (smoke: off, to stay within seconds)
    e2e_model: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK = Mode(
    name="quick",
    selection_alerts=150,
    sweep_latency_alerts=40,
    sweep_accuracy_alerts=200,
    sweep_max_steps=4,
    recursion_grid=((1, 2), (2, 1), (2, 2), (4, 2)),
    halt_thresholds=(0.5, 0.8, 0.9, 0.99, 1.01),
    footprint=True,
    rates=(10, 100, 500),
    phase_seconds=10.0,
    storm_alerts=500,
    max_phase=True,
    max_rate=1500,
    max_seconds=5.0,
    max_drain_wait_s=10.0,
    drain_wait_s=60.0,
    burst_runs=3,
    saturation_levels=(50, 100, 200, 300, 500, 750, 1000),
    saturation_seconds=4.0,
    saturation_wait_s=5.0,
    scale_seconds_per_point=0.06,
    batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    coldstart_repeats=2,
    operator_coldstart=True,
    operator_policies=50,
    profile_seconds=5.0,
    runtimes_load_s=20.0,
    e2e_model=True,
)

FULL = Mode(
    name="full",
    selection_alerts=2500,
    sweep_latency_alerts=400,
    sweep_accuracy_alerts=2500,
    sweep_max_steps=8,
    recursion_grid=((1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (4, 1), (4, 2), (4, 3)),
    halt_thresholds=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.01),
    footprint=True,
    rates=(10, 100, 500),
    phase_seconds=60.0,
    storm_alerts=500,
    max_phase=True,
    max_rate=1500,
    max_seconds=30.0,
    max_drain_wait_s=60.0,
    drain_wait_s=60.0,
    burst_runs=3,
    saturation_levels=(50, 100, 200, 300, 500, 750, 1000),
    saturation_seconds=15.0,
    saturation_wait_s=30.0,
    scale_seconds_per_point=0.5,
    batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    coldstart_repeats=7,
    operator_coldstart=True,
    operator_policies=500,
    profile_seconds=30.0,
    runtimes_load_s=60.0,
    e2e_model=True,
)

SMOKE = Mode(
    name="smoke",
    selection_alerts=20,
    sweep_latency_alerts=5,
    sweep_accuracy_alerts=20,
    sweep_max_steps=2,
    recursion_grid=((2, 2),),
    halt_thresholds=(0.9, 1.01),
    footprint=False,
    rates=(5,),
    phase_seconds=2.0,
    storm_alerts=20,
    max_phase=False,
    max_rate=0,
    max_seconds=0.0,
    max_drain_wait_s=0.0,
    drain_wait_s=30.0,
    burst_runs=1,
    saturation_levels=(20, 50),
    saturation_seconds=1.0,
    saturation_wait_s=10.0,
    scale_seconds_per_point=0.02,
    batch_sizes=(1, 4),
    coldstart_repeats=1,
    operator_coldstart=False,
    operator_policies=1,
    profile_seconds=2.0,
    runtimes_load_s=0.0,
    e2e_model=False,
)

MODES = {m.name: m for m in (QUICK, FULL, SMOKE)}


@dataclass(frozen=True)
class Options:
    """What a section needs beyond its size: which checkpoint, where plots go."""

    checkpoint: str | None = None  # TRM checkpoint directory; None = the shipped models/checkpoints/trm
    plots_dir: str | None = None  # None = no plots
