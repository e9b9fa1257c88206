"""Serving a pool's waiting queue: which demands get GPUs now, and where. Pure (no database), so
the rule can be tested on its own; allocator/services.py runs it under the pool lock.

The rule — work-conserving backfilling (PRODUCT.md section 4)
-------------------------------------------------------------
Demands are taken one by one in queue order: priority (urgent first), then approval time, then
id. The *record* is the pool's real timeline (capacity changes and allocations, future ones
included) plus the placements made ahead in this pass (they are allocations from now on). The
*planning timeline* is the record plus the reservations of the waiting demands ahead.

1. A demand that fits on the planning timeline at an acceptable start is placed at the earliest
   such start: exactly its requested start for a fixed demand; any start in [requested start,
   requested start + horizon] for a flexible one. Placing means allocating (an allocation may
   begin in the future), unless `accept` says no (e.g. the share rule sends it to executive
   review; then it holds nothing).
2. A demand that does not fit keeps waiting. It holds GPUs back from the demands behind it (a
   *reservation*) only over a period where it could itself be placed on record: a fixed demand
   its period if that fits on record, a flexible one its earliest placement on record within its
   window. Otherwise it holds nothing: GPUs are never kept idle for a demand that cannot use
   them (256 GPUs with 64 held: a fixed 200 waits, and requests for 16 behind it are served from
   the 192 free).

"Delays" is judged on the record: a later demand is placed only where it fits together with
every earlier placement and reservation, so no earlier demand that could be placed on record
loses that placement. A consequence worth knowing: in one pass a reservation never arises. The
first demand that waits meets the record alone, so it is not placeable on record, and holds
nothing; by induction neither does any demand after it. The queue is thus served first-fit in
queue order on the record; waiting demands are those that cannot be placed on record at all,
and when the record changes (a release, a reclaim, an arrival) the next pass decides again.
tests/allocator/test_work_conservation.py checks all this against a brute-force oracle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from .timeline import Span, Timeline

if TYPE_CHECKING:  # planning stays pure: no database imports at run time
    from .selectors import ShareCheck


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
    # key -> the planning timeline it did not fit on (for allocator/waiting.py's numbers)
    waited_on: dict[int, Timeline] = field(default_factory=dict)
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
    (services.engine) and the forecast (allocator/forecast/) both call this."""
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


def share_refusal(
    executive_reviewed: bool, span: Span, check: Callable[[Span], ShareCheck]
) -> ShareCheck | None:
    """The share rule at apply time (PRODUCT.md section 3, rule 1, checked again): None when the
    span may be allocated, else the failed check (a selectors.ShareCheck) — the change goes to
    executive review instead. A change executives already reviewed is not checked again."""
    if executive_reviewed:
        return None
    result = check(span)
    return result if result.exceeds else None


def past_project_end(end: datetime, project_name: str, expected_end: date | None) -> str | None:
    """The executive-review reason of a period that runs past its project's expected end (the
    project's last day, whole), in words; None when it does not. The one rule behind the
    decision's routing (requests_app) and the apply engine's second look (the date may have
    moved earlier in between)."""
    if expected_end is None:
        return None
    project_ends = datetime.combine(expected_end + timedelta(days=1), time.min, tzinfo=UTC)
    if end <= project_ends:
        return None
    return (
        f"runs until {end.astimezone(UTC):%Y-%m-%d}, after project {project_name}'s "
        f"expected end ({expected_end:%Y-%m-%d})"
    )


def fit_start(timeline: Timeline, demand: Demand) -> datetime | None:
    """The earliest acceptable start at which the demand fits, or None."""
    if demand.latest_start is not None:  # flexible
        return timeline.earliest_start(
            demand.gpus, demand.duration, demand.start, demand.latest_start
        )
    return demand.start if timeline.fits(demand.gpus, demand.start, demand.end) else None


def reservation(record: Timeline, demand: Demand) -> Span | None:
    """What a demand that must wait holds back from those behind it: the period where it could
    itself be placed on `record` (see the module docstring), or None."""
    start = fit_start(record, demand)
    return None if start is None else Span(start, start + demand.duration, demand.gpus)


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
        f"{max(short.at, demand.start):%Y-%m-%d %H:%M} UTC (counting requests ahead in the queue)"
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
    record = planning = timeline  # the same until a demand ahead holds a reservation
    for demand in demands:
        start = fit_start(planning, demand)
        if start is not None:
            span = Span(start, start + demand.duration, demand.gpus)
            if accept(demand, span):
                plan.placed[demand.key] = span
                shared = planning is record
                record = record.with_span(span)
                planning = record if shared else planning.with_span(span)
            else:
                plan.refused[demand.key] = span
            continue
        plan.waiting[demand.key] = why_waiting(planning, demand, horizon_days)
        plan.waited_on[demand.key] = planning
        held = reservation(record, demand)
        if held is not None:
            plan.reserved[demand.key] = held
            planning = planning.with_span(held)
    plan.timeline = planning
    return plan
