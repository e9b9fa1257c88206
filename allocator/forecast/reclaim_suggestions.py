"""Reclaim suggestions for compute ops: for the first waiting urgent or high-priority requests,
the least-harm set of reclaims that would let each start by the earliest a reclaim can take
effect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.utils import timezone

from ..loaders import load_pool_rows
from ..models import Allocation, AllocationChange
from ..signals import MeasuredUse, measured_idle, request_ids_for_changes
from ..timeline import Span
from .words import project_label, when

Status = AllocationChange.Status


@dataclass(frozen=True)
class ReclaimStep:
    allocation_id: int
    label: str
    gpus: int
    keep: int  # GPUs it would keep (0: all go back)
    why: str  # why this one: winding down, ends soon, low priority

    @property
    def take(self) -> int:
        return self.gpus - self.keep


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


class HeldAllocation(NamedTuple):
    """An allocation holding GPUs in a pool with an urgent request waiting: the columns the
    least-harm order reads (values_list order)."""

    id: int
    pool_id: int
    project_id: int
    project_name: str
    project_confidential: bool
    project_state: str
    project_expected_end: date | None
    priority: int | None  # of the change that made it; None for a hand-made allocation
    gpus: int
    start: datetime
    end: datetime
    state: str


_STATE_ORDER = {"ended": 0, "winding_down": 1, "active": 2}


def reclaim_suggestions(*, now: datetime | None = None, limit: int = 10) -> list[ReclaimSuggestion]:
    """For the first waiting urgent or high-priority requests: the least-harm set of reclaims
    that would let each start by the earliest date a reclaim can take effect (now plus the
    notice period, RECLAIM_NOTICE_HOURS) or its own start if later, on the pool alone (a
    transfer places it ahead of the queue). Least harm: allocations the cluster measured idle
    (or far under their GPUs) first, the least used first; then projects that are ended or
    winding down, then the nearest expected end, then the lowest priority; unneeded picks are
    dropped and the last one only shrinks by what is missing. Suggestions only — ops decides.
    Four queries, and what the usage read-back costs (two with the connectors app)."""
    from ..models import Priority

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
    # Only the allocations that overlap some suggestion's window are read: every question below
    # (fits, shortfall, the window's steps, the candidates) looks before the latest window end.
    until = max(_window(c, effective)[1] for c in urgent)
    rows_of = load_pool_rows(
        pool_ids,
        origin=now,
        until=until,
        fields=(
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
        ),
        row=HeldAllocation,
    )
    requests = request_ids_for_changes([c.pk for c in urgent])
    # Asked once for every pool: only an allocation that has started can have been measured.
    idle = measured_idle(
        sorted(
            r.id
            for rows in rows_of.held.values()
            for r in rows
            if r.state == Allocation.State.ACTIVE and r.start <= now
        ),
        now=now,
    )
    out = []
    for change in urgent:
        rows: list[HeldAllocation] = rows_of.held[change.pool_id]
        timeline = rows_of.timeline(change.pool_id, now)
        start, end = _window(change, effective)
        suggestion: dict[str, Any] = dict(
            change_id=change.pk,
            request_id=requests.get(change.pk),
            pool_id=change.pool_id,
            pool_name=change.pool.name,
            label=project_label(change.project.name, change.project.confidential),
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
                if r.state == Allocation.State.ACTIVE
                and r.project_id != change.project_id
                and r.start < end
                and r.end > start
            ),
            key=lambda r: (
                r.id not in idle,
                idle[r.id].share if r.id in idle else 0.0,
                _STATE_ORDER.get(r.project_state, 3),
                r.project_expected_end or datetime.max.date(),
                r.priority if r.priority is not None else 0,
                -r.gpus,
                r.id,
            ),
        )

        def freed(chosen, tl=timeline):
            for r in chosen:
                tl = tl.with_span(Span(max(r.start, effective), r.end, -r.gpus))
            return tl

        chosen: list[HeldAllocation] = []
        current = timeline  # freed(chosen), kept up to date as picks are added
        for r in candidates:
            if current.fits(change.gpus, start, end):
                break
            short = current.shortfall(change.gpus, start, end)
            if short is not None and r.start <= short.at < r.end:
                chosen.append(r)
                current = current.with_span(Span(max(r.start, effective), r.end, -r.gpus))
        if not current.fits(change.gpus, start, end):
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
                [0, *(change.gpus - s.free for s in without.window(start, end) if s.at < r.end)]
            )
            take = min(r.gpus, missing) if r is chosen[-1] else r.gpus
            reasons = []
            if r.id in idle:
                reasons.append(_used_words(idle[r.id], r.gpus))
            if r.project_state in ("ended", "winding_down"):
                reasons.append(f"project {r.project_state.replace('_', ' ')}")
            if r.project_expected_end is not None:
                reasons.append(f"expected to end {r.project_expected_end:%d %b %Y}")
            if r.priority is not None:
                reasons.append(f"{Priority(r.priority).label} priority")
            steps.append(
                ReclaimStep(
                    allocation_id=r.id,
                    label=project_label(r.project_name, r.project_confidential),
                    gpus=r.gpus,
                    keep=r.gpus - take,
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


def _window(change: AllocationChange, effective: datetime) -> tuple[datetime, datetime]:
    """When the suggestion should let the change hold its GPUs: from the earliest a reclaim takes
    effect (or its own start, if later); a flexible start keeps its duration."""
    start = max(change.start, effective)
    end = change.end if not change.flexible_start else start + (change.end - change.start)
    return start, end


def _used_words(use: MeasuredUse, gpus: int) -> str:
    """The share of GPU-hours as GPUs kept busy: "used 3 of 64 GPUs over the last 24 hours"."""
    busy = use.share * gpus
    amount = "under 1" if 0 < busy < 0.5 else f"{busy:.0f}"
    return f"used {amount} of {gpus} GPUs over the last {use.hours} hours"
