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
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.utils import timezone

from ..loaders import HOLDING_STATES
from ..models import Allocation, CapacityChange
from ..planning import Demand, demand_for, fit_start, reservation, share_refusal
from ..selectors import horizon, queue_key, share_check_on
from ..timeline import Span, Timeline
from ..waiting import LateStart, late_start, short_sentence, sooner_sentence, waiting_facts
from .state import PoolState, SimAllocation, SimChange, Status, load_pools
from .words import duration_words, when

ASSUMPTIONS = "assumes no new approvals and no early releases"
TICK = timedelta(microseconds=1)  # "just after" an instant (PostgreSQL keeps microseconds)
MAX_INSTANTS = 20_000  # a safety net: every instant retires a demand or a reclaim in practice


@dataclass(frozen=True)
class ForecastOutcome:
    change_id: int
    kind: str  # "allocated", "review" (sent to executive review), "failed" (never served)
    decided_at: datetime | None  # the instant the engine would act
    start: datetime | None  # of the allocation, for "allocated"
    end: datetime | None
    reason: str
    # A fixed start served after it: it runs only to its end (allocator/waiting.py).
    late: LateStart | None = None
    # Whole sentences for a change that waits now: the short instant, and what would serve it
    # sooner (a start from a given date, fewer GPUs now).
    detail: str = ""

    @property
    def allocated(self) -> bool:
        return self.kind == "allocated"


@dataclass
class Forecast:
    pool_id: int
    now: datetime
    outcomes: dict[int, ForecastOutcome]  # change id -> what becomes of it
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
        self.outcomes: dict[int, ForecastOutcome] = {}
        self.cascades: dict[str, int] = {}  # why re-planning went on behind a change (a figure)
        self.instants: list[datetime] = []
        self.notes: dict[datetime, list[str]] = defaultdict(list)  # what happens at an instant
        # change id -> (the timeline, its demand) where it waited at `now`: why it waits now
        self.waited_now: dict[int, tuple[Timeline, Demand]] = {}
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
                problem = f"Not served within the horizon. {self._why_of(entry)}"
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
        if t == self.now:
            self.waited_now.setdefault(change.pk, (timeline, demand))
        entry.unblock = entry.reserve_from = entry.closes = None
        if demand.latest_start is not None:  # flexible
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
        """Why it waits on `timeline`, in whole sentences (allocator/waiting.py's words)."""
        if demand.flexible:
            return (
                f"The pool never has {demand.gpus} GPUs free for "
                f"{duration_words(demand.duration)} starting before {when(demand.latest_start)}."
            )
        return short_sentence(self._facts(timeline, demand))

    def _facts(self, timeline: Timeline, demand: Demand):
        return waiting_facts(timeline, demand, horizon_end=self.now + self.flex_horizon)

    def _allocate(self, change: SimChange, span: Span, t: datetime) -> None:
        if change.kind == "extension":
            target = self._own(cast(int, change.target_allocation_id))
            assert target is not None  # an extension's target is loaded with the pool
            target.end = span.end
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
        late = None
        if change.kind != "extension" and not change.flexible_start:
            late = late_start(change.start, change.end, span.start)
        self._settle(change, "allocated", t, span=span, late=late)

    def _settle(
        self,
        change: SimChange,
        kind: str,
        t: datetime | None,
        *,
        span: Span | None = None,
        reason: str = "",
        late: LateStart | None = None,
    ) -> None:
        self.outcomes[change.pk] = ForecastOutcome(
            change_id=change.pk,
            kind=kind,
            decided_at=t,
            start=span.start if span else None,
            end=span.end if span else None,
            reason=reason,
            late=late,
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
                assert timeline is not None  # set when cascading began, then extended
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
                assert timeline is not None  # it held something: it was planned on `timeline`
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
            assert a is not None  # found just above
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
        why = self._why_of(entry) or "The GPUs are never free for its whole period."
        if not change.flexible_start and change.kind != "extension":
            why = f"{why} It needs them until {when(change.end)}."
        self._settle(change, "failed", None, reason=f"Not served within the horizon. {why}")

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
            if key in self.waited_now and o.kind != "review":
                self.outcomes[key] = o = replace(o, detail=self._detail(key, o.kind))
            if o.kind != "allocated" or o.reason:
                continue
            assert o.start is not None and o.decided_at is not None  # an allocation has both
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
            self.outcomes[key] = replace(o, reason=reason)

    def _detail(self, change_id: int, kind: str) -> str:
        """Why a change waits now (its failure reason says so already) and what would serve it
        sooner, in whole sentences."""
        timeline, demand = self.waited_now[change_id]
        facts = self._facts(timeline, demand)
        parts = [sooner_sentence(facts)]
        if kind == "allocated" and not demand.flexible:
            parts.insert(0, short_sentence(facts))
        return " ".join(p for p in parts if p)


def simulate(state: PoolState, *, now: datetime) -> Forecast:
    """The forecast of one pool (pure: no queries beyond division names for review reasons)."""
    return _Simulation(state, now).run()


def forecast_pools(pool_ids: Iterable[int], *, now: datetime | None = None) -> dict[int, Forecast]:
    """Forecasts of the given pools, computed now (six queries, then memory)."""
    now = now or timezone.now()
    return {pid: simulate(state, now=now) for pid, state in load_pools(pool_ids, now=now).items()}
