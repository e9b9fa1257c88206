"""What-if: what candidate shares of one pool would do, before anyone saves them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from org.models import Division

from ..models import Pool
from .forecasts import pool_forecasts
from .reclaim import ReclaimRow, reclaim_lists


@dataclass(frozen=True)
class StartChange:
    change_id: int
    request_id: int | None
    label: str
    gpus: int
    before: str  # the forecast in words, with the shares as they are
    after: str  # ... with the candidate shares
    shift_days: float | None  # + later, - earlier; None when the kind of outcome changes


@dataclass(frozen=True)
class WhatIfRow:
    division: Division
    share: int
    candidate: int
    held_now: int
    peak: int
    reclaim: list[ReclaimRow]  # allocations standing above the candidate share

    @property
    def over(self) -> bool:
        return self.peak > self.candidate

    @property
    def excess(self) -> int:
        return max(self.peak - self.candidate, 0)


@dataclass(frozen=True)
class ShareWhatIf:
    pool: Pool
    rows: list[WhatIfRow]
    moved: list[StartChange]
    capacity_now: int = 0

    assumptions = "Assumes no new approvals and no early releases."

    @property
    def shares_total(self) -> int:
        return sum(r.candidate for r in self.rows)

    @property
    def warnings(self) -> list[str]:
        """The same warning saving gives (ShareUpdate.warnings), before anyone saves."""
        if self.shares_total > self.capacity_now:
            return [
                f"The tried shares of {self.pool.name} add up to {self.shares_total} GPUs, more "
                f"than its capacity of {self.capacity_now}: saving them would overcommit it."
            ]
        return []


def _outcome_words(o) -> str:
    from ..forecast import when

    if o is None:
        return "—"
    if o.kind == "allocated":
        return f"starts {when(o.start)}"
    if o.kind == "review":
        return "sent to executive review at apply time"
    return "not within the horizon"


def share_whatif(
    *, pool: Pool, candidate: dict[int, int], now: datetime | None = None
) -> ShareWhatIf:
    """What candidate shares of one pool would do, before anyone saves them: each division's
    holding (now, peak over the horizon) against its candidate share with the allocations that
    would stand above it, and which waiting requests would start earlier or later — the share
    rule decides at apply time who is sent to executive review, so the queue is simulated
    (allocator/forecast/) with the shares as they are and with the candidates."""
    from ..forecast import load_pools, simulate

    now = now or timezone.now()
    divisions = list(Division.objects.all())
    state = load_pools([pool.pk], now=now)[pool.pk]
    shares = {d.pk: state.shares.get(d.pk, 0) for d in divisions}
    proposed = {d.pk: candidate.get(d.pk, shares[d.pk]) for d in divisions}
    forecast = pool_forecasts([pool], origin=now)[pool.pk]
    reclaims = reclaim_lists(
        {(pool.pk, d.pk): forecast.division_peak(d.pk) - proposed[d.pk] for d in divisions},
        origin=forecast.origin,
        until=forecast.until,
    )
    rows = [
        WhatIfRow(
            division=d,
            share=shares[d.pk],
            candidate=proposed[d.pk],
            held_now=forecast.division_held_now(d.pk),
            peak=forecast.division_peak(d.pk),
            reclaim=reclaims.get((pool.pk, d.pk), []),
        )
        for d in divisions
    ]
    before = simulate(state, now=now).outcomes
    after = simulate(state.with_changes(shares=proposed), now=now).outcomes
    labels = {c.pk: (c.label, c.gpus) for c in state.changes}
    moved_ids = []
    for change_id, b in before.items():
        a = after.get(change_id)
        if a is None or (b.kind, b.start) == (a.kind, a.start):
            continue
        moved_ids.append(change_id)
    from ..signals import request_ids_for_changes

    request_of = request_ids_for_changes(moved_ids)
    moved = []
    for change_id in moved_ids:
        b, a = before[change_id], after[change_id]
        shift = None
        if b.kind == a.kind == "allocated":
            assert a.start is not None and b.start is not None  # an allocation has a start
            shift = round((a.start - b.start).total_seconds() / 86400, 1)
        label, gpus = labels.get(change_id, ("a request", 0))
        moved.append(
            StartChange(
                change_id=change_id,
                request_id=request_of.get(change_id),
                label=label,
                gpus=gpus,
                before=_outcome_words(b),
                after=_outcome_words(a),
                shift_days=shift,
            )
        )
    moved.sort(key=lambda m: (m.shift_days is None, m.shift_days or 0))
    from ..selectors import pools_status

    return ShareWhatIf(
        pool=pool, rows=rows, moved=moved, capacity_now=pools_status([pool])[0].capacity
    )
