"""Serving a pool's waiting queue: which demands get GPUs now, and where. Pure (no database), so
the rule can be tested on its own; allocator/services.py runs it under the pool lock.

The rule — conservative backfilling
-----------------------------------
Demands are taken one by one in queue order: priority (urgent first), then approval time, then
id. The planning timeline starts as the pool's real one (capacity changes, allocations held).

1. A demand that fits at an acceptable start is placed at the earliest such start: exactly its
   requested start for a fixed demand; any start in [requested start, requested start + horizon]
   for a flexible one. Placing means allocating (an allocation may begin in the future), unless
   `accept` says no (e.g. the share rule sends it to executive review); a placed demand holds
   its GPUs in the planning timeline for everyone after it.
2. A demand that does not fit keeps waiting and gets a *reservation* in the planning timeline
   that every demand after it must fit around:
   - fixed start: its whole requested period, [start, end) x gpus — it can never move, so
     nothing behind it may take GPUs it needs there, even if the pool is now short there;
   - flexible start: the period it would get at its earliest start on what is known now,
     searched past its horizon (the timeline is constant after its last event).
   A demand bigger than the pool can ever hold over its period gets no reservation: it cannot
   be served on known capacity, and must not block everyone behind it.

Hence a later demand is served only where it fits together with every earlier demand's
placement or reservation, so serving it never makes an earlier waiting demand start later than
it could on what is known: a fixed demand finds exactly the GPUs it would have found without
the later one when capacity frees (a release, a reclaim, an arrival), and a flexible one keeps
its earliest start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

from .timeline import Span, Timeline


@dataclass(frozen=True)
class Demand:
    key: int  # the change id
    gpus: int
    start: datetime  # the earliest acceptable start (already no earlier than the planning origin)
    duration: timedelta
    latest_start: datetime | None = None  # flexible: the latest acceptable start; None: fixed

    @property
    def flexible(self) -> bool:
        return self.latest_start is not None

    @cached_property  # read several times per plan (a frozen dataclass keeps it in __dict__)
    def end(self) -> datetime:
        return self.start + self.duration


@dataclass
class Plan:
    placed: dict[int, Span] = field(default_factory=dict)
    refused: dict[int, Span] = field(default_factory=dict)  # fitted, but `accept` said no
    waiting: dict[int, str] = field(default_factory=dict)  # key -> why it waits
    reserved: dict[int, Span] = field(default_factory=dict)
    timeline: Timeline | None = None


# The spellings of AllocationChange.Kind.EXTENSION and Allocation.State.ACTIVE (this module
# imports no models, so the forecast can feed it plain rows).
EXTENSION = "extension"
ACTIVE = "active"


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def demand_for(change, now: datetime, targets: dict, *, horizon: timedelta):
    """(Demand, None) for an approved change the engine can still serve at `now`, or (None, why
    not). `change` has pk, kind, target_allocation_id, gpus, start, end, flexible_start;
    `targets` maps allocation ids to objects with state, end and gpus. The apply engine
    (services._serve) and the forecast (allocator/forecast.py) both call this."""
    if change.kind == EXTENSION:
        target = targets.get(change.target_allocation_id)
        if target is None or target.state != ACTIVE or target.end <= now:
            return None, "the allocation to extend is no longer active"
        if change.end <= target.end:
            return None, (
                f"the allocation already ends at {_fmt(target.end)}, not before the asked-for end"
            )
        return Demand(change.pk, target.gpus, target.end, change.end - target.end), None
    # A start already past (the change was applied or served late) means: from now on.
    start = max(change.start, now)
    if change.flexible_start:
        latest = change.start + horizon
        if start > latest:
            return None, (
                f"no start was found within the {horizon.days}-day horizon before it passed"
            )
        return Demand(change.pk, change.gpus, start, change.end - change.start, latest), None
    if change.end <= now:
        return None, "the requested period ended before the GPUs were free"
    return Demand(change.pk, change.gpus, start, change.end - start), None


def share_refusal(executive_reviewed: bool, span: Span, check: Callable[[Span], object]):
    """The share rule at apply time (PRODUCT.md section 3, rule 1, checked again): None when the
    span may be allocated, else the failed check (a selectors.ShareCheck) — the change goes to
    executive review instead. A change executives already reviewed is not checked again."""
    if executive_reviewed:
        return None
    result = check(span)
    return result if result.exceeds else None


def fit_start(timeline: Timeline, demand: Demand) -> datetime | None:
    """The earliest acceptable start at which the demand fits, or None."""
    if demand.flexible:
        return timeline.earliest_start(
            demand.gpus, demand.duration, demand.start, demand.latest_start
        )
    return demand.start if timeline.fits(demand.gpus, demand.start, demand.end) else None


def reservation(timeline: Timeline, demand: Demand) -> Span | None:
    """Where a demand that must wait is held in the plan (see the module docstring)."""
    if demand.flexible:
        last = max(timeline.last_instant, demand.start)
        start = timeline.earliest_start(demand.gpus, demand.duration, demand.start, last)
        if start is None:
            return None
        return Span(start, start + demand.duration, demand.gpus)
    if demand.gpus > timeline.min_capacity(demand.start, demand.end):
        return None
    return Span(demand.start, demand.end, demand.gpus)


def why_waiting(timeline: Timeline, demand: Demand, horizon_days: int | None = None) -> str:
    if demand.flexible:
        days = f"the {horizon_days}-day horizon" if horizon_days else "its horizon"
        return (
            f"no start within {days} has {demand.gpus} GPUs free for the whole period "
            "(counting requests ahead in the queue)"
        )
    short = timeline.shortfall(demand.gpus, demand.start, demand.end)
    if short is None:  # fitted but refused: not a waiting reason
        return ""
    free = max(short.free, 0)
    return (
        f"only {free} of the {demand.gpus} GPUs asked for are free at "
        f"{short.at:%Y-%m-%d %H:%M} UTC (counting requests ahead in the queue)"
    )


def plan_queue(
    timeline: Timeline,
    demands: Iterable[Demand],
    *,
    accept: Callable[[Demand, Span], bool] = lambda d, s: True,
    horizon_days: int | None = None,
) -> Plan:
    """Serve `demands`, given in queue order, against `timeline`. `accept(demand, span)` is called
    for each demand that fits, in order, and may refuse it (then it holds nothing)."""
    plan = Plan()
    for demand in demands:
        start = fit_start(timeline, demand)
        if start is not None:
            span = Span(start, start + demand.duration, demand.gpus)
            if accept(demand, span):
                plan.placed[demand.key] = span
                timeline = timeline.with_span(span)
            else:
                plan.refused[demand.key] = span
            continue
        plan.waiting[demand.key] = why_waiting(timeline, demand, horizon_days)
        held = reservation(timeline, demand)
        if held is not None:
            plan.reserved[demand.key] = held
            timeline = timeline.with_span(held)
    plan.timeline = timeline
    return plan
