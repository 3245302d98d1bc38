"""Plan a night that fits its window: which adapters start, in what order, and which wait for the next night.

A platform team runs the nightly flow in a fixed window on shared GPUs, and Prefect has no answer for a night that
runs long. So the flow plans its own night before it starts anything (:func:`plan_night`):

1. **Forecast** each adapter's cost from what past nights recorded (:func:`forecast_of`): the per-stage seconds
   (decompose + calibrate + every candidate's write and γ + every evaluation), or the wall seconds of the visit
   that made its latest decision when that is larger (the stages leave out fetching, loading the model, the
   registry's writes and the orchestration: on the tiny test fleet they were a fifth of the wall time); an adapter with
   no history gets the fleet's median past cost, and on a first night :attr:`WindowConfig.default_adapter_seconds`.
2. **Order** by priority (:func:`priority_key`): deferred last night first, then never refined, then a new version,
   then the declared ``priority`` (higher first), then the oldest decision, then the name.
3. **Fit** in that order onto ``lanes`` (``RunConfig.concurrency``) by list scheduling: each adapter takes the lane
   that frees first; it starts if it would end inside ``wall_clock`` and the GPU-hours of everything started stay
   within ``gpu_hours``; otherwise it is deferred (never failed) with the reason, and a smaller one behind it may
   still fill the gap. A deferred adapter is first in line the next night.

While the night runs, :func:`still_fits` re-checks each adapter against the real clock before it starts: past the
window's end no new adapter starts. An adapter still in flight at ``wall_clock + grace`` (:func:`time_left`) is
released at its next checkpoint between stages and recorded deferred, so it is first in line the next night.

Pure: no Prefect, no registry, no clock (elapsed seconds are arguments).
"""

from __future__ import annotations

import heapq
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])?")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
DEFAULT_ADAPTER_SECONDS = 600.0  # first night, nothing recorded yet (docs/operations.md: how to calibrate it)


def parse_duration(v, name: str):
    """A duration given as hours (a number), with a unit (``'36h'``, ``'90m'``, ``'2d'``, ``'45s'``) or in ISO 8601
    (``'PT6H'``, left to pydantic): a ``timedelta`` where it can tell, else ``v`` unchanged.

    Raises:
        ValueError: ``v`` is a boolean (a YAML ``yes`` is not a duration), naming the field ``name``.
    """
    if isinstance(v, bool):
        raise ValueError(f"{name} must be a duration such as 6, '6h', '90m' or '1d', got {v!r}")
    if isinstance(v, (int, float)):
        return timedelta(hours=v)
    if isinstance(v, str) and (m := _DURATION.fullmatch(v.strip())):
        return timedelta(**{_UNITS[m.group(2) or "h"]: float(m.group(1))})
    return v


class WindowConfig(BaseModel):
    """``window:`` of a run config: the night's wall clock and/or GPU-hours budget (off when both are unset).

    The window decides what runs tonight, never what a result is: it enters no key.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_clock: timedelta | None = Field(
        None, description="How long the night may run: hours as a number or with a unit (6, '6h', '90m'), or ISO "
        "8601 ('PT6H'). Adapters that would end past it are deferred to the next night; none = no wall clock.")
    gpu_hours: float | None = Field(
        None, gt=0, description="GPU-hours the night may spend, all lanes together (one adapter holds one lane); "
        "none = no budget.")
    grace: timedelta | None = Field(
        timedelta(minutes=5), description="How long past wall_clock an adapter still in flight may run before it is "
        "released: interrupted between stages (never mid-write), recorded deferred, nothing promoted, first in line "
        "the next night. Hours as a number or with a unit ('5m', '90s'); none = adapters in flight finish.")
    default_adapter_seconds: float = Field(
        DEFAULT_ADAPTER_SECONDS, gt=0, description="Forecast of an adapter with no recorded cost on a night when no "
        "adapter has one either (the first night); later nights use the fleet's median recorded cost.")

    @field_validator("wall_clock", mode="before")
    @classmethod
    def _duration(cls, v):
        return None if v is None else parse_duration(v, "window.wall_clock")

    @field_validator("wall_clock")
    @classmethod
    def _positive(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v <= timedelta(0):
            raise ValueError(f"window.wall_clock must be positive (e.g. 6h), got {v}")
        return v

    @field_validator("grace", mode="before")
    @classmethod
    def _grace_duration(cls, v):
        return None if v is None else parse_duration(v, "window.grace")

    @field_validator("grace")
    @classmethod
    def _not_negative(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(0):
            raise ValueError(f"window.grace must not be negative (e.g. 5m; none: adapters in flight finish), got {v}")
        return v

    @model_validator(mode="after")
    def _some_limit(self) -> "WindowConfig":
        if self.wall_clock is None and self.gpu_hours is None:
            raise ValueError("window needs wall_clock (e.g. 6h) and/or gpu_hours (e.g. 12); to run without a window "
                             "leave window out")
        return self

    @property
    def wall_clock_s(self) -> float | None:
        """The wall clock in seconds (None: none)."""
        return None if self.wall_clock is None else self.wall_clock.total_seconds()

    @property
    def hard_stop_s(self) -> float | None:
        """When adapters in flight are released, seconds from the night's start: ``wall_clock + grace`` (None: no
        wall clock, or no grace)."""
        if self.wall_clock is None or self.grace is None:
            return None
        return (self.wall_clock + self.grace).total_seconds()

    @property
    def gpu_seconds(self) -> float | None:
        """The GPU budget in lane-seconds (None: none)."""
        return None if self.gpu_hours is None else self.gpu_hours * 3600.0


@dataclass(frozen=True)
class AdapterHistory:
    """What the planner knows of one adapter version that needs work tonight.

    Attributes:
        name: The adapter's name.
        version_id: The version to refine.
        never_refined: No version of the adapter was ever refined to a decision.
        new_version: The adapter was refined before, but not this version.
        deferred: The latest run that saw this version deferred it (it is first in line).
        priority: The declared priority (higher runs first; 0 when none was declared).
        last_decision_at: When the adapter's latest decision was made (None: never).
        stage_seconds: Past per-stage seconds of its latest refinement with recorded costs
            (``{"decompose": .., "calibrate": .., "write": .., "gamma": .., "evaluate": ..}``); empty: no history.
        wall_seconds: Wall seconds of the visit that made its latest decision, as the nightly flow measured it
            (None: unknown). Smaller than the stages when that visit reused stored stages; larger when it computed
            them (overheads included).
    """

    name: str
    version_id: int
    never_refined: bool = False
    new_version: bool = False
    deferred: bool = False
    priority: int = 0
    last_decision_at: datetime | None = None
    stage_seconds: Mapping[str, float] = field(default_factory=dict)
    wall_seconds: float | None = None


@dataclass(frozen=True)
class PlannedAdapter:
    """One adapter in the night's plan.

    Attributes:
        name: The adapter; ``version_id`` its version.
        action: ``start`` (fits the window) or ``defer`` (waits for the next night, first in line).
        rank: Its place in the priority order (0 = first).
        forecast_s: Forecast wall seconds of refining it.
        basis: Where the forecast comes from: ``history`` (its own recorded stages), ``fleet`` (the fleet's median)
            or ``default`` (``default_adapter_seconds``, nothing recorded yet).
        lane: The lane it is planned on (None when deferred); ``start_s``/``end_s`` its planned start and end,
            seconds from the night's start.
        reason: A sentence a person can read: why it starts where it does, or why it waits.
    """

    name: str
    version_id: int
    action: Literal["start", "defer"]
    rank: int
    forecast_s: float
    basis: Literal["history", "fleet", "default"]
    lane: int | None
    start_s: float | None
    end_s: float | None
    reason: str


@dataclass(frozen=True)
class NightPlan:
    """The plan of a night, in priority order (``entries``), with its planned span and GPU-seconds."""

    entries: tuple[PlannedAdapter, ...]
    lanes: int
    wall_clock_s: float | None
    gpu_seconds: float | None

    @property
    def started(self) -> list[PlannedAdapter]:
        """The adapters planned to start, in priority order."""
        return [e for e in self.entries if e.action == "start"]

    @property
    def deferred(self) -> list[PlannedAdapter]:
        """The adapters deferred to the next night, in priority order."""
        return [e for e in self.entries if e.action == "defer"]

    @property
    def planned_end_s(self) -> float:
        """When the last started adapter is planned to end (seconds from the start; 0 when none starts)."""
        return max((e.end_s for e in self.started if e.end_s is not None), default=0.0)


def clock(seconds: float) -> str:
    """Seconds as ``h:mm:ss`` (``1:05:00``), how the plan's reasons and the summary show times."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def forecast_seconds(stage_seconds: Mapping[str, float]) -> float | None:
    """An adapter's forecast from its recorded per-stage seconds: their sum (None when nothing is recorded)."""
    values = [float(v) for v in stage_seconds.values() if v is not None]
    return sum(values) if values else None


def forecast_of(h: AdapterHistory) -> float | None:
    """An adapter's own forecast: the larger of its recorded stage seconds and the wall seconds of the run that made
    its latest decision (None: neither is recorded)."""
    known = [x for x in (forecast_seconds(h.stage_seconds), h.wall_seconds) if x is not None]
    return max(known) if known else None


def priority_key(h: AdapterHistory) -> tuple:
    """Sort key, first in line first: deferred last night, never refined, new version, declared priority (higher
    first), oldest decision (never decided first), name (ties broken the same way every night)."""
    oldest = h.last_decision_at.timestamp() if h.last_decision_at is not None else float("-inf")
    return (not h.deferred, not h.never_refined, not h.new_version, -h.priority, oldest, h.name)


def why_first(h: AdapterHistory) -> str:
    """The priority rule that placed ``h`` where it is, in words."""
    if h.deferred:
        return "deferred last night"
    if h.never_refined:
        return "never refined"
    if h.new_version:
        return "new version"
    if h.priority:
        return f"priority {h.priority}"
    return "oldest decision first" if h.last_decision_at is not None else "no decision yet"


def plan_night(adapters: Sequence[AdapterHistory], window: WindowConfig, lanes: int = 1,
               elapsed_s: float = 0.0) -> NightPlan:
    """Order the night's adapters by priority and fit them into the window on ``lanes`` lanes.

    Args:
        adapters: Every adapter version that needs work tonight.
        window: The wall clock and/or GPU-hours budget.
        lanes: Adapters refined at once (``RunConfig.concurrency``).
        elapsed_s: Seconds of the night already spent when the plan is made (the scan): every lane frees then.

    Returns:
        The plan, in priority order: each adapter ``start`` (with its lane and planned span) or ``defer`` (with why).
    """
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    own = {h.name: forecast_of(h) for h in adapters}
    known = [s for s in own.values() if s is not None]
    fallback, fallback_basis = ((statistics.median(known), "fleet") if known
                                else (window.default_adapter_seconds, "default"))
    wall, budget = window.wall_clock_s, window.gpu_seconds
    free = [(float(elapsed_s),
             lane) for lane in range(lanes)]  # (when the lane frees, lane): the lane that frees first is next
    spent = 0.0
    entries = []
    for rank, h in enumerate(sorted(adapters, key=priority_key)):
        forecast = own[h.name] if own[h.name] is not None else fallback
        basis = "history" if own[h.name] is not None else fallback_basis
        at, lane = free[0]
        end = at + forecast
        why = f"{why_first(h)}; forecast {clock(forecast)} ({basis})"
        if wall is not None and forecast > wall:
            action, reason = "defer", f"{why} is longer than the whole window {clock(wall)}: raise window.wall_clock " \
                                      "or refine it outside the window"
        elif wall is not None and end > wall:
            action, reason = "defer", f"{why} would end at {clock(end)}, past the window {clock(wall)}"
        elif budget is not None and spent + forecast > budget:
            action, reason = "defer", f"{why} would bring the night to {(spent + forecast) / 3600:.2f} GPU-hours, " \
                                      f"past the budget {budget / 3600:.2f}"
        else:
            action, reason = "start", f"{why}; lane {lane} from {clock(at)} to {clock(end)}"
        if action == "start":
            heapq.heapreplace(free, (end, lane))
            spent += forecast
            entries.append(PlannedAdapter(h.name, h.version_id, "start", rank, forecast, basis, lane, at, end, reason))
        else:
            entries.append(PlannedAdapter(h.name, h.version_id, "defer", rank, forecast, basis, None, None, None,
                                          reason))
    return NightPlan(tuple(entries), lanes, wall, budget)


def still_fits(entry: PlannedAdapter, elapsed_s: float, spent_s: float, window: WindowConfig) -> str | None:
    """Whether a planned adapter may still start now, by the real clock: None if it may, else why not.

    Args:
        entry: The adapter about to start (its ``forecast_s``).
        elapsed_s: Seconds since the night started.
        spent_s: GPU lane-seconds committed so far: the actual seconds of adapters that finished plus the forecasts
            of those in flight.
        window: The window.
    """
    wall, budget = window.wall_clock_s, window.gpu_seconds
    if wall is not None and elapsed_s + entry.forecast_s > wall:
        return (f"the night ran long: at {clock(elapsed_s)} its forecast {clock(entry.forecast_s)} would end at "
                f"{clock(elapsed_s + entry.forecast_s)}, past the window {clock(wall)}")
    if budget is not None and spent_s + entry.forecast_s > budget:
        return (f"the night spent more than planned: {spent_s / 3600:.2f} GPU-hours committed, its forecast would "
                f"bring it past the budget {budget / 3600:.2f}")
    return None


def time_left(elapsed_s: float, window: WindowConfig) -> float | None:
    """Seconds an adapter starting now may run before the window's hard stop (:attr:`WindowConfig.hard_stop_s`);
    None: no hard stop. Never negative."""
    stop = window.hard_stop_s
    return None if stop is None else max(0.0, stop - elapsed_s)


def eta_seconds(left: Sequence[float | None], mean_s: float | None, lanes: int = 1) -> float | None:
    """The time left of a night, for the progress line: the plan's forecasts of the adapters not yet done, summed
    and shared among the lanes.

    Args:
        left: One entry per adapter not yet done (in flight or waiting): its forecast in seconds, or None where the
            plan has none (a night without a window).
        mean_s: The mean seconds of this run's finished adapters, standing in for a missing forecast (None: none
            finished yet).
        lanes: Adapters refined at once.

    Returns:
        Seconds (0 when nothing is left), or None when an adapter has neither a forecast nor a mean to stand in.
    """
    if not left:
        return 0.0
    if any(f is None for f in left) and mean_s is None:
        return None
    total = sum(mean_s if f is None else f for f in left)
    return total / max(1, min(lanes, len(left)))


def forecast_error(forecast_s: float, actual_s: float) -> float:
    """Relative forecast error of one adapter: ``(actual − forecast) / forecast`` (+0.25: took 25 % longer)."""
    return (actual_s - forecast_s) / forecast_s
