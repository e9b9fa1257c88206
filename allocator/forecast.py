"""When will each approved request get its GPUs? A simulator of a pool's future (issue 8).

Starting from the database as it is now, it plays the pool forward under two assumptions — no
new approvals and no early releases — through what is already known: allocations ending,
scheduled capacity changes, scheduled reclaims (and transfers) taking effect, and the waiting
queue served by exactly the engine's rules. It calls the engine's own code: the queue order
(selectors.queue_key), the demand of a change (planning.demand_for), the fit and the
reservations (planning.fit_start / planning.reservation on allocator.timeline.Timeline), and the
share rule at apply time (planning.share_refusal on selectors.share_check_on). There is no second
copy of the rules to drift.

When the engine acts
--------------------
The engine re-plans a pool's queue (services._serve) whenever it runs: at a release, an expiry,
a reclaim, an arrival, and from the periodic sweep. With the database otherwise unchanged, the
plan made at instant t differs from the one made earlier only where time itself changes a
demand (planning.demand_for clips a start already past to t; a flexible demand's window closes;
an extension's allocation ends). For a fixed demand that waits on the planning timeline, the
window [t, end) fits from the instant just after the last step in it that is short of GPUs —
its *unblock* instant — and not one moment before; everything else in the queue stays as
planned. So the simulator re-plans at: now; every unblock instant of a waiting fixed demand
(every one is an instant where free GPUs rise: an allocation ends, GPUs arrive, an earlier
demand's period ends); every reclaim's effective time; every closing of a flexible demand's
window (its horizon passes) and every end of an allocation an extension waits on. Running the
real engine (the periodic services with now=t) at exactly `Forecast.instants` ends in the same
allocations (tests/allocator/test_forecast.py checks this on built and generated scenarios);
running it at any other instant in between changes nothing, as argued above.

Re-planning is incremental: each demand keeps the planning timeline it was planned on; at an
instant only the demands whose own inputs changed are planned again, and the rest of the queue
only when what such a demand holds in the plan changed (placing a fixed demand at its unblock
instant holds exactly what its reservation held, so nothing behind it moves). Behind such a
change, a waiting fixed demand whose window [start, end) the changed holdings do not meet reads
the same planning timeline over its window, so it is not planned again either: it keeps its
snapshot and notes the change (`_Entry.diff`), applied only if its snapshot is used again. A
demand that can no longer be served fails without a timeline (its reason names the one it last
waited on).
"""

from __future__ import annotations

import bisect
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import Allocation, AllocationChange, CapacityChange, DivisionShare, Pool, Reclaim
from .planning import Demand, demand_for, fit_start, reservation, share_refusal
from .selectors import HOLDING_STATES, horizon, queue_key, share_check_on
from .timeline import Span, Timeline

ASSUMPTIONS = "assumes no new approvals and no early releases"
TICK = timedelta(microseconds=1)  # "just after" an instant (PostgreSQL keeps microseconds)
MAX_INSTANTS = 20_000  # a safety net: every instant retires a demand or a reclaim in practice

Status = AllocationChange.Status


# --- the pool's rows, as plain objects -----------------------------------------------------


@dataclass
class SimAllocation:
    id: int
    start: datetime
    end: datetime
    gpus: int
    state: str
    division_id: int
    label: str  # "project Atlas" or "a confidential project"
    change_id: int | None = None  # set for the allocations the forecast itself makes


@dataclass
class SimChange:
    pk: int
    priority: int
    approved_at: datetime
    kind: str
    target_allocation_id: int | None
    gpus: int
    start: datetime
    end: datetime
    flexible_start: bool
    executive_reviewed: bool
    division_id: int
    label: str
    status: str = Status.WAITING
    division_name: str = "the division"


@dataclass
class SimReclaim:
    pk: int
    allocation_id: int
    new_gpus: int
    new_end: datetime | None
    effective_at: datetime
    transfer_to_id: int | None


@dataclass
class PoolState:
    """Everything the simulation of one pool reads (built by `load_pools`, six queries for any
    number of pools; tests and what-ifs may build or copy one by hand)."""

    pool_id: int
    pool_name: str
    capacity_changes: list[tuple[datetime, int, str]]
    allocations: list[SimAllocation]
    changes: list[SimChange]  # waiting and pending (approved, not yet applied)
    reclaims: list[SimReclaim]
    shares: dict[int, int]  # division id -> GPUs

    def with_changes(
        self,
        *,
        extra: Iterable[SimChange] = (),
        shares: dict[int, int] | None = None,
    ) -> PoolState:
        """A what-if copy: more approved changes, other shares."""
        return PoolState(
            pool_id=self.pool_id,
            pool_name=self.pool_name,
            capacity_changes=self.capacity_changes,
            allocations=self.allocations,
            changes=[*self.changes, *extra],
            reclaims=self.reclaims,
            shares=dict(self.shares if shares is None else shares),
        )


def _label(project_name: str, confidential: bool) -> str:
    return "a confidential project" if confidential else f"project {project_name}"


_C_TIMESTAMPTZ = None


def read_rows(queryset) -> list[tuple]:
    """The rows of a values_list queryset, as the ORM would give them, read with psycopg's own
    (C) timestamptz loader where Django's would be used: Django's is pure Python (about 4 µs a
    timestamp, most of the load time at lab scale: ~90,000 timestamps). Both give aware
    datetimes in the session time zone, which Django sets to its database TIME_ZONE; only for
    UTC (the setting here) is the tzinfo object the same, so other zones keep Django's."""
    global _C_TIMESTAMPTZ
    from django.core.exceptions import EmptyResultSet
    from django.db import connections

    connection = connections[queryset.db]
    try:
        sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:
        return []
    with connection.cursor() as cursor:
        raw = getattr(cursor, "cursor", None)
        if connection.vendor == "postgresql" and connection.timezone_name == "UTC" and raw:
            if _C_TIMESTAMPTZ is None:
                import psycopg

                oid = psycopg.postgres.types["timestamptz"].oid
                _C_TIMESTAMPTZ = psycopg.adapters.get_loader(oid, psycopg.pq.Format.TEXT)
            raw.adapters.register_loader("timestamptz", _C_TIMESTAMPTZ)  # this cursor only
        cursor.execute(sql, params)
        return cursor.fetchall()


def load_pools(pool_ids: Iterable[int], *, now: datetime) -> dict[int, PoolState]:
    """The rows the simulation needs for the given pools, in six queries whatever their number."""
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    names = {
        p.pk: p.name for p in Pool.objects.filter(pk__in=ids).only("id", "cluster", "gpu_model")
    }
    capacity: dict[int, list] = defaultdict(list)
    for pool_id, at, delta, kind in read_rows(
        CapacityChange.objects.filter(pool_id__in=ids).values_list(
            "pool_id", "effective_at", "delta", "kind"
        )
    ):
        capacity[pool_id].append((at, delta, kind))
    live = [Status.WAITING, Status.PENDING]
    targets = AllocationChange.objects.filter(
        pool_id__in=ids, status__in=live, target_allocation__isnull=False
    ).values("target_allocation_id")
    allocations: dict[int, list[SimAllocation]] = defaultdict(list)
    for row in read_rows(
        Allocation.objects.filter(pool_id__in=ids)
        .filter(Q(state__in=HOLDING_STATES, end__gt=now) | Q(pk__in=targets))
        .order_by()
        .values_list(
            "id",
            "pool_id",
            "start",
            "end",
            "gpus",
            "state",
            "project__team__division_id",
            "project__name",
            "project__confidential",
        )
    ):
        allocations[row[1]].append(
            SimAllocation(
                id=row[0],
                start=row[2],
                end=row[3],
                gpus=row[4],
                state=row[5],
                division_id=row[6],
                label=_label(row[7], row[8]),
            )
        )
    changes: dict[int, list[SimChange]] = defaultdict(list)
    for row in read_rows(
        AllocationChange.objects.filter(pool_id__in=ids, status__in=live)
        .order_by()
        .values_list(
            "id",
            "pool_id",
            "priority",
            "approved_at",
            "kind",
            "target_allocation_id",
            "gpus",
            "start",
            "end",
            "flexible_start",
            "executive_reviewed",
            "project__team__division_id",
            "project__name",
            "project__confidential",
            "status",
            "project__team__division__name",
        )
    ):
        changes[row[1]].append(
            SimChange(
                pk=row[0],
                priority=row[2],
                approved_at=row[3],
                kind=row[4],
                target_allocation_id=row[5],
                gpus=row[6],
                start=row[7],
                end=row[8],
                flexible_start=row[9],
                executive_reviewed=row[10],
                division_id=row[11],
                label=_label(row[12], row[13]),
                status=row[14],
                division_name=row[15],
            )
        )
    reclaims: dict[int, list[SimReclaim]] = defaultdict(list)
    for row in read_rows(
        Reclaim.objects.filter(allocation__pool_id__in=ids, status=Reclaim.Status.SCHEDULED)
        .order_by()
        .values_list(
            "id",
            "allocation__pool_id",
            "allocation_id",
            "new_gpus",
            "new_end",
            "effective_at",
            "transfer_to_id",
        )
    ):
        reclaims[row[1]].append(SimReclaim(row[0], row[2], row[3], row[4], row[5], row[6]))
    shares: dict[int, dict[int, int]] = defaultdict(dict)
    for pool_id, division_id, gpus in DivisionShare.objects.filter(pool_id__in=ids).values_list(
        "pool_id", "division_id", "gpus"
    ):
        shares[pool_id][division_id] = gpus
    return {
        pool_id: PoolState(
            pool_id=pool_id,
            pool_name=names.get(pool_id, f"pool {pool_id}"),
            capacity_changes=capacity[pool_id],
            allocations=allocations[pool_id],
            changes=changes[pool_id],
            reclaims=reclaims[pool_id],
            shares=shares[pool_id],
        )
        for pool_id in ids
    }


# --- what the forecast says ----------------------------------------------------------------


@lru_cache(maxsize=8192)  # reasons name the same few instants again and again
def when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%d %b %Y %H:%M UTC").lstrip("0")


def _days(d: timedelta) -> str:
    days = d.total_seconds() / 86400
    if days >= 1:
        return f"{days:.0f} days" if days >= 2 or days.is_integer() else f"{days:.1f} days"
    return f"{d.total_seconds() / 3600:.0f} hours"


@dataclass(frozen=True)
class Outcome:
    change_id: int
    kind: str  # "allocated", "review" (sent to executive review), "failed" (never served)
    decided_at: datetime | None  # the instant the engine would act
    start: datetime | None  # of the allocation, for "allocated"
    end: datetime | None
    reason: str

    @property
    def allocated(self) -> bool:
        return self.kind == "allocated"


@dataclass
class Forecast:
    pool_id: int
    now: datetime
    outcomes: dict[int, Outcome]  # change id -> what becomes of it
    instants: list[datetime]  # where the engine acts (now first)
    allocations: list[SimAllocation] = field(default_factory=list)  # the pool at the end

    def start_of(self, change_id: int) -> datetime | None:
        o = self.outcomes.get(change_id)
        return o.start if o is not None and o.allocated else None


# --- the simulation ------------------------------------------------------------------------


@dataclass
class _Entry:
    """A change in the queue and where the last plan left it."""

    change: SimChange
    snapshot: Timeline | None = None  # the planning timeline it was planned on
    held: Span | None = None  # its reservation in the plan, if any
    demand: Demand | None = None
    unblock: datetime | None = None  # fixed: from when its window fits, plan unchanged
    reserve_from: datetime | None = None  # fixed without a reservation: from when it gets one
    closes: datetime | None = None  # when it can no longer be served (matters if it holds)
    why_on: Timeline | None = None  # the timeline it last waited on
    # What changed in the plan ahead of it since it was planned, from then on (signed spans):
    # the planning timeline in front of it is `snapshot` with these added (`_Simulation._ahead`).
    diff: tuple[Span, ...] = ()


class _Simulation:
    def __init__(self, state: PoolState, now: datetime):
        self.state = state
        self.now = now
        self.flex_horizon = horizon()
        self.horizon_days = settings.ALLOTMENT["HORIZON_DAYS"]
        self.capacity = [(at, delta) for at, delta, _ in state.capacity_changes]
        # The state's own objects, copied before the simulation changes one (`_own`).
        self.allocations = {a.id: a for a in state.allocations}
        self._owned: set[int] = set()
        self.reclaims = sorted(state.reclaims, key=lambda r: (r.effective_at, r.pk))
        self.outcomes: dict[int, Outcome] = {}
        self.cascades: dict[str, int] = {}  # why re-planning went on behind a change (a figure)
        self.instants: list[datetime] = []
        self.notes: dict[datetime, list[str]] = defaultdict(list)  # what happens at an instant
        self.pending = sorted(
            (c for c in state.changes if c.status == Status.PENDING),
            key=lambda c: (c.approved_at, c.pk),
        )
        self.queue = [
            _Entry(c)
            for c in sorted((c for c in state.changes if c.status != Status.PENDING), key=queue_key)
        ]
        self._rebuild()

    def _own(self, allocation_id: int) -> SimAllocation | None:
        """The simulation's own copy of an allocation, to change."""
        a = self.allocations.get(allocation_id)
        if a is not None and allocation_id not in self._owned:
            a = self.allocations[allocation_id] = SimAllocation(**a.__dict__)
            self._owned.add(allocation_id)
        return a

    # The pool and each division as timelines.

    def _holding(self, a: SimAllocation) -> bool:
        return a.state in HOLDING_STATES

    def _rebuild(self) -> None:
        held = [a for a in self.allocations.values() if self._holding(a)]
        self.base = Timeline(self.now, self.capacity, [Span(a.start, a.end, a.gpus) for a in held])
        self.divisions: dict[int, Timeline] = {}

    def _division(self, division_id: int) -> Timeline:
        if division_id not in self.divisions:
            self.divisions[division_id] = Timeline(
                self.now,
                self.capacity,
                [
                    Span(a.start, a.end, a.gpus)
                    for a in self.allocations.values()
                    if self._holding(a) and a.division_id == division_id
                ],
            )
        return self.divisions[division_id]

    def _share_check(self, change: SimChange, span: Span):
        return share_check_on(
            self._division(change.division_id),
            division_id=change.division_id,
            share=self.state.shares.get(change.division_id, 0),
            gpus=span.gpus,
            start=span.start,
            end=span.end,
        )

    # One change meets the plan at instant t: the engine's accept (services._serve).

    def _demand(self, entry: _Entry, t: datetime) -> Demand | None:
        """The change's demand at t, or None when it can no longer be served (then settled as
        failed, saying what it waited for: no timeline is needed for that)."""
        change = entry.change
        demand, problem = demand_for(change, t, self.allocations, horizon=self.flex_horizon)
        if problem:
            if entry.why_on is not None:  # it waited: say what it waited for
                problem = f"not within the horizon: {self._why_of(entry)}"
            self._settle(change, "failed", t, reason=problem)
            return None
        return demand

    def _try(
        self, entry: _Entry, timeline: Timeline, t: datetime, demand: Demand | None = None
    ) -> tuple[str, Span | None]:
        """Plan one change on `timeline` at t (its `_demand` at t, if known). Returns (outcome,
        what it holds in the plan): outcome is "placed", "review", "failed" or "waiting"."""
        change = entry.change
        demand = demand or self._demand(entry, t)
        if demand is None:
            return "failed", None
        start = fit_start(timeline, demand)
        if start is not None:
            span = Span(start, start + demand.duration, demand.gpus)
            refusal = share_refusal(
                change.executive_reviewed, span, lambda s: self._share_check(change, s)
            )
            if refusal is not None:
                self._settle(
                    change,
                    "review",
                    t,
                    reason="sent to executive review when it would fit on "
                    f"{when(t)}: it {refusal.sentence(change.division_name, self.state.pool_name)}",
                )
                self.notes[t].append(
                    f"{change.label}'s request for {change.gpus} GPUs goes to executive review"
                )
                return "review", None
            self._allocate(change, span, t)
            return "placed", span
        entry.demand = demand
        held = reservation(timeline, demand)
        entry.held = held
        entry.why_on = timeline  # the words are made only when needed (`_why_of`)
        entry.unblock = entry.reserve_from = entry.closes = None
        if demand.flexible:
            entry.closes = demand.latest_start + TICK
        elif change.kind == "extension":
            entry.closes = demand.start  # the extended allocation's end
        else:
            entry.unblock = timeline.free_from(demand.gpus, demand.start, demand.end)
            if held is None:
                entry.reserve_from = timeline.capacity_from(demand.gpus, demand.start, demand.end)
        return "waiting", held

    def _why_of(self, entry: _Entry) -> str:
        if entry.why_on is None or entry.demand is None:
            return ""
        return self._why(entry.why_on, entry.demand)

    def _why(self, timeline: Timeline, demand: Demand) -> str:
        if demand.flexible:
            return (
                f"the pool never has {demand.gpus} GPUs free for {_days(demand.duration)} "
                f"starting before {when(demand.latest_start)}"
            )
        short = timeline.shortfall(demand.gpus, demand.start, demand.end)
        if short is None:
            return ""
        return (
            f"only {max(short.free, 0)} of the {demand.gpus} GPUs are free at "
            f"{when(max(short.at, demand.start))}"
        )

    def _allocate(self, change: SimChange, span: Span, t: datetime) -> None:
        if change.kind == "extension":
            self._own(change.target_allocation_id).end = span.end
        else:
            self.allocations[-change.pk] = SimAllocation(
                id=-change.pk,
                start=span.start,
                end=span.end,
                gpus=span.gpus,
                state=Allocation.State.ACTIVE,
                division_id=change.division_id,
                label=change.label,
                change_id=change.pk,
            )
        self.base = self.base.with_span(span)
        if change.division_id in self.divisions:
            self.divisions[change.division_id] = self.divisions[change.division_id].with_span(span)
        self._settle(change, "allocated", t, span=span)

    def _settle(self, change, kind: str, t: datetime, *, span=None, reason: str = "") -> None:
        self.outcomes[change.pk] = Outcome(
            change_id=change.pk,
            kind=kind,
            decided_at=t,
            start=span.start if span else None,
            end=span.end if span else None,
            reason=reason,
        )

    # Serving the queue at an instant.

    @staticmethod
    def _same(a: Span | None, b: Span | None, t: datetime) -> bool:
        """Do two holdings hold the same from t on?"""
        a = a if a is not None and a.end > t else None
        b = b if b is not None and b.end > t else None
        if a is None or b is None:
            return a is b
        return (max(a.start, t), a.end, a.gpus) == (max(b.start, t), b.end, b.gpus)

    @staticmethod
    def _due(entry: _Entry, t: datetime) -> bool:
        c = entry.change
        return (
            entry.snapshot is None
            or (entry.unblock is not None and entry.unblock <= t)
            or (entry.reserve_from is not None and entry.reserve_from <= t)
            or (entry.closes is not None and entry.closes <= t)
            or (not c.flexible_start and c.kind != "extension" and c.end <= t)
        )

    def serve(self, t: datetime, *, dirty_from: int | None = None) -> None:
        """Plan the queue at t, as services._serve would, re-planning only what can change:
        a change whose own inputs changed (`_due`), and behind a change whose holding in the
        plan changed, every change whose plan that can change (`_untouched`), or everything
        from `dirty_from` on."""
        kept: list[_Entry] = []
        timeline: Timeline | None = None  # the live planning timeline while cascading
        cascading = False  # from `dirty_from` on: everything is planned again
        diff: tuple[Span, ...] | None = None  # behind a changed holding: what changed, from t
        for i, entry in enumerate(self.queue):
            if dirty_from is not None and i >= dirty_from and not cascading:
                cascading = True
                timeline = self._timeline_before(i, kept, t)
            if cascading:
                entry.snapshot, entry.diff = timeline, ()
                outcome, held = self._try(entry, timeline, t)
                if outcome == "waiting":
                    kept.append(entry)
                if held is not None:
                    timeline = timeline.with_span(held)
                continue
            if not self._due(entry, t):
                if diff is None:
                    kept.append(entry)
                    continue
                if self._untouched(entry, diff, t):
                    # Its window does not meet what changed: planned again, it would wait
                    # exactly as it does, on a timeline equal to its own over its window.
                    self._keep_waiting(entry, diff, t)
                    kept.append(entry)
                    if entry.held is not None and entry.held.end > t:
                        timeline = None  # the live timeline is no longer known: rebuilt
                    continue
            before = entry.held
            demand = self._demand(entry, t)
            if demand is None:  # failed: it holds nothing, and the timeline is not needed
                outcome, held = "failed", None
            else:
                if timeline is None or diff is None:
                    timeline = self._timeline_before(i, kept, t, diff or ())
                entry.snapshot, entry.diff = timeline, ()
                outcome, held = self._try(entry, timeline, t, demand)
                if outcome == "waiting":
                    kept.append(entry)
            if not self._same(before, held, t):
                if diff is None:
                    self.cascades[outcome] = self.cascades.get(outcome, 0) + 1
                diff = (*(diff or ()), *self._change(before, held, t))
            # `timeline`, when known, is the live planning timeline behind this change.
            if diff is None:
                timeline = None
            elif held is not None:
                timeline = timeline.with_span(held)
        self.queue = kept

    @staticmethod
    def _change(before: Span | None, after: Span | None, t: datetime) -> tuple[Span, ...]:
        """A holding's change in the plan from t on, as signed spans."""
        out = []
        if before is not None and before.end > t:
            out.append(Span(max(before.start, t), before.end, -before.gpus))
        if after is not None and after.end > t:
            out.append(Span(max(after.start, t), after.end, after.gpus))
        return tuple(out)

    @staticmethod
    def _untouched(entry: _Entry, diff: tuple[Span, ...], t: datetime) -> bool:
        """Is a waiting fixed change's plan independent of `diff`? Everything its plan reads
        (the fit, its reservation, its unblock instant, why it waits) is the planning timeline
        over its window [max(start, t), end), so it is when no changed span meets the window.
        Flexible changes and extensions are always planned again."""
        c = entry.change
        if c.flexible_start or c.kind == "extension" or entry.snapshot is None:
            return False
        start, end = max(c.start, t), c.end
        return all(s.end <= start or s.start >= end for s in diff)

    def _keep_waiting(self, entry: _Entry, diff: tuple[Span, ...], t: datetime) -> None:
        """What planning an `_untouched` change again at t would change: its demand starts no
        earlier than t, and so does its reservation; the timeline ahead of it has `diff` more."""
        demand, _ = demand_for(entry.change, t, self.allocations, horizon=self.flex_horizon)
        entry.demand = demand
        if entry.held is not None:
            entry.held = Span(demand.start, demand.end, demand.gpus)
        entry.diff = (*entry.diff, *diff)

    def _timeline_before(
        self, i: int, kept: list[_Entry], t: datetime, diff: tuple[Span, ...] = ()
    ) -> Timeline:
        """The planning timeline in front of queue entry i: the base, which holds every placement
        so far (also those behind it: a change behind a waiting one may be placed over its window,
        PRODUCT.md section 4, work conservation), plus what the changes ahead of it hold. A
        snapshot taken when it was planned would miss those placements."""
        return self._planning_timeline(kept, t)

    def _planning_timeline(self, ahead: list[_Entry], t: datetime) -> Timeline:
        """The pool as planned for the next change: the base plus what the changes ahead of it
        hold (the planner's timeline after them)."""
        timeline = self.base
        for entry in ahead:
            if entry.held is not None and entry.held.end > t:
                timeline = timeline.with_span(entry.held)
        return timeline

    # Reclaims.

    def apply_reclaims(self, t: datetime) -> bool:
        applied = False
        while self.reclaims and self.reclaims[0].effective_at <= t:
            reclaim = self.reclaims.pop(0)
            a = self.allocations.get(reclaim.allocation_id)
            if a is None or a.state != Allocation.State.ACTIVE or a.end <= reclaim.effective_at:
                continue  # the engine cancels it
            a = self._own(reclaim.allocation_id)
            applied = True
            if reclaim.new_gpus == 0:
                if a.start < reclaim.effective_at < a.end:
                    a.end = reclaim.effective_at
                a.state = Allocation.State.RECLAIMED
                self.notes[t].append(f"the reclaim of {a.label}'s {a.gpus} GPUs takes effect")
            else:
                self.notes[t].append(
                    f"the reclaim of {a.gpus - min(a.gpus, reclaim.new_gpus)} of {a.label}'s "
                    f"{a.gpus} GPUs takes effect"
                )
                a.gpus = min(a.gpus, reclaim.new_gpus)
                if reclaim.new_end is not None and reclaim.new_end < a.end:
                    a.end = reclaim.new_end
            self._rebuild()
            if reclaim.transfer_to_id:
                self._transfer(reclaim.transfer_to_id, t)
        return applied

    def _transfer(self, change_id: int, t: datetime) -> None:
        """services._place: the named change goes first, on the pool alone."""
        for i, entry in enumerate(self.queue):
            if entry.change.pk == change_id:
                outcome, _ = self._try(entry, self.base, t)
                if outcome != "waiting":
                    del self.queue[i]
                    entry.held = None
                entry.snapshot = None  # planned again in its place by the serve that follows
                return
        for i, change in enumerate(self.pending):
            if change.pk == change_id:
                entry = _Entry(change)
                outcome, _ = self._try(entry, self.base, t)
                del self.pending[i]
                if outcome == "waiting":
                    self._enqueue(entry)
                return

    def _enqueue(self, entry: _Entry) -> int:
        keys = [queue_key(e.change) for e in self.queue]
        i = bisect.bisect_left(keys, queue_key(entry.change))
        entry.snapshot = None
        self.queue.insert(i, entry)
        return i

    # The run.

    def next_instant(self, t: datetime) -> datetime | None:
        candidates = [r.effective_at for r in self.reclaims[:1]]
        for entry in self.queue:
            for at in (entry.unblock, entry.reserve_from, entry.closes):
                if at is not None and at > t:
                    candidates.append(at)
        return min(candidates) if candidates else None

    def run(self) -> Forecast:
        t = self.now
        self.apply_reclaims(t)
        self.instants.append(t)
        # Approved changes not applied yet join the queue in their place and are served with
        # it (one apply serving the queue with the change in its place, as services._serve does
        # with `extra`; several at once are taken in queue order).
        if self.pending:  # in one pass: the queue order is a total order
            self.queue = sorted(
                [*self.queue, *(_Entry(c) for c in self.pending)], key=lambda e: queue_key(e.change)
            )
            for entry in self.queue:
                entry.snapshot, entry.diff = None, ()
            self.pending = []
        self.serve(t, dirty_from=0)
        for _ in range(MAX_INSTANTS):
            nxt = self.next_instant(t)
            if nxt is None:
                break
            t = nxt
            self.instants.append(t)
            moved = self.apply_reclaims(t)
            self.serve(t, dirty_from=0 if moved else None)
        for entry in self.queue:
            self._never(entry, t)
        self._explain()
        return Forecast(
            pool_id=self.state.pool_id,
            now=self.now,
            outcomes=self.outcomes,
            instants=self.instants,
            allocations=list(self.allocations.values()),
        )

    def _never(self, entry: _Entry, t: datetime) -> None:
        change = entry.change
        why = self._why_of(entry) or "the GPUs are never free for its whole period"
        if not change.flexible_start and change.kind != "extension":
            why = f"{why}; it needs them until {when(change.end)}"
        self._settle(change, "failed", None, reason=f"not within the horizon: {why}")

    # Reasons in words.

    def _explain(self) -> None:
        ends: dict[datetime, list[str]] = defaultdict(list)
        for a in self.allocations.values():
            if a.end > self.now:
                who = a.label if a.change_id is None else f"{a.label}'s forecast allocation"
                ends[a.end].append(f"{who}'s {a.gpus} GPUs of {self.state.pool_name} end")
        for at, delta, kind in self.state.capacity_changes:
            if at > self.now:
                if kind == CapacityChange.Kind.ARRIVAL:
                    words = f"the arrival of {delta} GPUs lands"
                elif delta > 0:
                    words = f"{delta} GPUs come back from repair"
                else:
                    words = f"{-delta} GPUs leave the pool"
                ends[at].append(words)
        for entry_change in self.state.changes:
            if not entry_change.flexible_start and entry_change.kind != "extension":
                ends[entry_change.end].append(
                    f"{entry_change.label}'s waiting request for {entry_change.gpus} GPUs "
                    "reaches its end date"
                )
        for key, o in list(self.outcomes.items()):
            if o.kind != "allocated" or o.reason:
                continue
            if o.decided_at == self.now:
                reason = (
                    "as the GPUs are free now for its whole period"
                    if o.start <= self.now + timedelta(minutes=1)
                    else "as the GPUs are free from then for its whole period"
                )
            else:
                events = self.notes.get(o.decided_at, []) + ends.get(o.decided_at, [])
                what = events[0] if events else "GPUs free up"
                more = f" (and {len(events) - 1} more)" if len(events) > 1 else ""
                reason = f"when {what}{more} on {when(o.decided_at)}"
            self.outcomes[key] = Outcome(o.change_id, o.kind, o.decided_at, o.start, o.end, reason)


def simulate(state: PoolState, *, now: datetime) -> Forecast:
    """The forecast of one pool (pure: no queries beyond division names for review reasons)."""
    return _Simulation(state, now).run()


def forecast_pools(pool_ids: Iterable[int], *, now: datetime | None = None) -> dict[int, Forecast]:
    """Forecasts of the given pools, computed now (six queries, then memory)."""
    now = now or timezone.now()
    return {pid: simulate(state, now=now) for pid, state in load_pools(pool_ids, now=now).items()}


# --- cached per pool, for pages and the API --------------------------------------------------

CACHE_SECONDS = 60  # time passing alone changes a forecast little; any write changes the key


def pool_versions(pool_ids: Iterable[int]) -> dict[int, str]:
    """A token per pool that changes on any write a forecast reads: the ledger (every grant,
    extension, release, reclaim, transfer, expiry), the waiting and pending changes, capacity
    changes, scheduled reclaims and shares. One query for any number of pools."""
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    from django.db import connection

    live = [Status.WAITING, Status.PENDING]
    # One grouped pass per table over the asked-for pools (a correlated subquery per pool
    # scanned the whole ledger once per pool: ~4 ms a pool at lab scale).
    sql = """
        WITH ledger AS (
            SELECT a.pool_id, max(l.id) AS top FROM allocator_ledgerentry l
            JOIN allocator_allocation a ON a.id = l.allocation_id
            WHERE a.pool_id = ANY(%(ids)s) GROUP BY a.pool_id
        ), changes AS (
            SELECT c.pool_id, sum(c.id) AS total, count(*) AS n FROM allocator_allocationchange c
            WHERE c.pool_id = ANY(%(ids)s) AND c.status = ANY(%(live)s) GROUP BY c.pool_id
        ), capacity AS (
            SELECT k.pool_id, sum(k.id) AS total FROM allocator_capacitychange k
            WHERE k.pool_id = ANY(%(ids)s) GROUP BY k.pool_id
        ), reclaims AS (
            SELECT a.pool_id, sum(r.id) AS total, count(*) AS n FROM allocator_reclaim r
            JOIN allocator_allocation a ON a.id = r.allocation_id
            WHERE a.pool_id = ANY(%(ids)s) AND r.status = 'scheduled' GROUP BY a.pool_id
        ), shares AS (
            SELECT s.pool_id,
                   string_agg(s.division_id || ':' || s.gpus, ',' ORDER BY s.id) AS listed
            FROM allocator_divisionshare s WHERE s.pool_id = ANY(%(ids)s) GROUP BY s.pool_id
        )
        SELECT p.id, p.created_at, coalesce(ledger.top, 0),
               coalesce(changes.total, 0) || '.' || coalesce(changes.n, 0),
               coalesce(capacity.total, 0),
               coalesce(reclaims.total, 0) || '.' || coalesce(reclaims.n, 0),
               coalesce(shares.listed, '')
        FROM allocator_pool p
        LEFT JOIN ledger ON ledger.pool_id = p.id
        LEFT JOIN changes ON changes.pool_id = p.id
        LEFT JOIN capacity ON capacity.pool_id = p.id
        LEFT JOIN reclaims ON reclaims.pool_id = p.id
        LEFT JOIN shares ON shares.pool_id = p.id
        WHERE p.id = ANY(%(ids)s)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"ids": ids, "live": live})
        return {row[0]: "|".join(str(v) for v in row[1:]) for row in cursor.fetchall()}


def outcomes_for_pools(
    pool_ids: Iterable[int], *, now: datetime | None = None
) -> dict[int, dict[int, Outcome]]:
    """{pool id: {change id: Outcome}} for the given pools: from Django's cache when the pool
    has not changed (one query for the versions), else simulated (six more queries for all the
    pools that missed) and cached."""
    from django.core.cache import cache

    now = now or timezone.now()
    versions = pool_versions(pool_ids)
    keys = {
        pid: f"forecast:{pid}:{hashlib.sha1(v.encode()).hexdigest()}" for pid, v in versions.items()
    }
    cached = cache.get_many(list(keys.values()))
    result = {pid: cached[key] for pid, key in keys.items() if key in cached}
    missing = [pid for pid in keys if pid not in result]
    if missing:
        fresh = {pid: f.outcomes for pid, f in forecast_pools(missing, now=now).items()}
        cache.set_many({keys[pid]: out for pid, out in fresh.items()}, CACHE_SECONDS)
        result.update(fresh)
    return result


# --- reclaim suggestions for compute ops ----------------------------------------------------


@dataclass(frozen=True)
class ReclaimStep:
    allocation_id: int
    label: str
    gpus: int
    keep: int  # GPUs it would keep (0: all go back)
    why: str  # why this one: winding down, ends soon, low priority


@dataclass(frozen=True)
class ReclaimSuggestion:
    change_id: int
    request_id: int | None
    pool_id: int
    pool_name: str
    label: str
    gpus: int
    priority: int
    start_by: datetime
    steps: list[ReclaimStep]
    note: str


_STATE_ORDER = {"ended": 0, "winding_down": 1, "active": 2}


def reclaim_suggestions(*, now: datetime | None = None, limit: int = 10) -> list[ReclaimSuggestion]:
    """For the first waiting urgent or high-priority requests: the least-harm set of reclaims
    that would let each start by the earliest date a reclaim can take effect (now plus the
    notice period, RECLAIM_NOTICE_HOURS) or its own start if later, on the pool alone (a
    transfer places it ahead of the queue). Least harm: projects that are ended or winding down
    first, then the nearest expected end, then the lowest priority; unneeded picks are dropped
    and the last one only shrinks by what is missing. Suggestions only — ops decides. Four
    queries."""
    from .models import Priority

    now = now or timezone.now()
    notice = timedelta(hours=settings.ALLOTMENT["RECLAIM_NOTICE_HOURS"])
    effective = now + notice
    urgent = list(
        AllocationChange.objects.filter(status=Status.WAITING, priority__gte=Priority.HIGH)
        .exclude(kind=AllocationChange.Kind.EXTENSION)
        .select_related("pool", "project")
        .order_by("-priority", "approved_at", "id")[:limit]
    )
    if not urgent:
        return []
    pool_ids = {c.pool_id for c in urgent}
    capacity: dict[int, list] = defaultdict(list)
    for pool_id, at, delta in CapacityChange.objects.filter(pool_id__in=pool_ids).values_list(
        "pool_id", "effective_at", "delta"
    ):
        capacity[pool_id].append((at, delta))
    held: dict[int, list] = defaultdict(list)
    for row in (
        Allocation.objects.filter(pool_id__in=pool_ids, state__in=HOLDING_STATES, end__gt=now)
        .order_by()
        .values_list(
            "id",
            "pool_id",
            "project_id",
            "project__name",
            "project__confidential",
            "project__state",
            "project__expected_end",
            "change__priority",
            "gpus",
            "start",
            "end",
            "state",
        )
    ):
        held[row[1]].append(row)
    requests = dict(
        AllocationChange.objects.filter(pk__in=[c.pk for c in urgent]).values_list(
            "pk", "request__id"
        )
    )
    out = []
    for change in urgent:
        rows = held[change.pool_id]
        timeline = Timeline(now, capacity[change.pool_id], [Span(r[9], r[10], r[8]) for r in rows])
        start = max(change.start, effective)
        end = change.end if not change.flexible_start else start + (change.end - change.start)
        suggestion = dict(
            change_id=change.pk,
            request_id=requests.get(change.pk),
            pool_id=change.pool_id,
            pool_name=change.pool.name,
            label=_label(change.project.name, change.project.confidential),
            gpus=change.gpus,
            priority=change.priority,
            start_by=start,
        )
        if end <= start:
            continue
        if timeline.fits(change.gpus, start, end):
            out.append(
                ReclaimSuggestion(
                    **suggestion,
                    steps=[],
                    note="The pool alone has the GPUs from then: a transfer naming this "
                    "request (of a few GPUs) would place it ahead of the queue, or it waits "
                    "for requests ahead of it.",
                )
            )
            continue
        candidates = sorted(
            (
                r
                for r in rows
                if r[11] == Allocation.State.ACTIVE
                and r[2] != change.project_id
                and r[9] < end
                and r[10] > start
            ),
            key=lambda r: (
                _STATE_ORDER.get(r[5], 3),
                r[6] or datetime.max.date(),
                r[7] if r[7] is not None else 0,
                -r[8],
                r[0],
            ),
        )

        def freed(chosen, tl=timeline):
            for r in chosen:
                tl = tl.with_span(Span(max(r[9], effective), r[10], -r[8]))
            return tl

        chosen = []
        for r in candidates:
            if freed(chosen).fits(change.gpus, start, end):
                break
            short = freed(chosen).shortfall(change.gpus, start, end)
            if short is not None and r[9] <= short.at < r[10]:
                chosen.append(r)
        if not freed(chosen).fits(change.gpus, start, end):
            out.append(
                ReclaimSuggestion(
                    **suggestion,
                    steps=[],
                    note="No set of reclaims frees enough GPUs for its whole period.",
                )
            )
            continue
        for r in list(reversed(chosen)):  # drop picks that turned out unneeded
            rest = [c for c in chosen if c is not r]
            if freed(rest).fits(change.gpus, start, end):
                chosen = rest
        steps = []
        for r in chosen:
            rest = [c for c in chosen if c is not r]
            without = freed(rest)
            missing = max(
                [0, *(change.gpus - s.free for s in without.window(start, end) if s.at < r[10])]
            )
            take = min(r[8], missing) if r is chosen[-1] else r[8]
            reasons = []
            if r[5] in ("ended", "winding_down"):
                reasons.append(f"project {r[5].replace('_', ' ')}")
            if r[6] is not None:
                reasons.append(f"expected to end {r[6]:%d %b %Y}")
            if r[7] is not None:
                reasons.append(f"{Priority(r[7]).label} priority")
            steps.append(
                ReclaimStep(
                    allocation_id=r[0],
                    label=_label(r[3], r[4]),
                    gpus=r[8],
                    keep=r[8] - take,
                    why=", ".join(reasons),
                )
            )
        out.append(
            ReclaimSuggestion(
                **suggestion,
                steps=steps,
                note=f"Effective {when(effective)} at the earliest (the notice period).",
            )
        )
    return out
