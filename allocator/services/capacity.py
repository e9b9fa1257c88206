"""Capacity changes: an arrival, a decommission or a repair, refused when a decrease would leave
some instant with fewer GPUs than are allocated."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record

from .. import locks
from ..models import MAX_GPUS, CapacityChange, Pool
from ..selectors import holding_allocations, pool_timeline
from .engine import serve
from .records import fmt, require_compute_ops


@transaction.atomic
def capacity_change_create(
    *, pool_id: int, kind: str, delta: int, effective_at: datetime, note: str = "", actor
) -> CapacityChange:
    """Compute ops record an arrival, a decommission or a repair. A decrease that would leave
    any instant from `effective_at` on with fewer GPUs than are allocated is refused, naming the
    allocations in the way. Arguments come parsed (CapacityChangeForm, the API's input
    serializer); this decides what is allowed."""
    require_compute_ops(actor)
    errors: dict[str, list[str]] = {}
    if kind not in CapacityChange.Kind.values:
        errors["kind"] = ["Choose arrival, decommission or repair."]
    if not -MAX_GPUS <= delta <= MAX_GPUS:
        errors["delta"] = [f"Enter a number from {-MAX_GPUS} to {MAX_GPUS}."]
    elif delta == 0:
        errors["delta"] = ["A change of 0 GPUs changes nothing."]
    elif kind == CapacityChange.Kind.ARRIVAL and delta < 0:
        errors["delta"] = ["An arrival adds GPUs: enter a positive number."]
    elif kind == CapacityChange.Kind.DECOMMISSION and delta > 0:
        errors["delta"] = ["A decommission removes GPUs: enter a negative number."]
    if timezone.is_naive(effective_at):
        errors["effective_at"] = ["Enter a date and time with its time zone."]
    note = note.strip()
    pool = locks.lock_pools([pool_id]).get(pool_id)
    if pool is None:
        errors["pool"] = ["Unknown pool."]
    if errors or pool is None:
        raise ValidationError(errors)

    if delta < 0:
        blockers = _decrease_blockers(pool, -delta, effective_at)
        if blockers:
            raise ValidationError({"delta": [blockers]})
    change = CapacityChange.objects.create(
        pool=pool,
        kind=kind,
        delta=delta,
        effective_at=effective_at,
        note=note,
        created_by=actor,
    )
    audit_record(
        actor=actor,
        action="capacity_change.create",
        obj=change,
        after={"pool": pool.pk, "kind": kind, "delta": delta, "effective_at": effective_at},
        message=f"{actor} recorded {change}.",
    )
    now = timezone.now()
    if delta > 0:
        # More GPUs, now or later: waiting requests may fit (a future arrival can serve a
        # flexible request, or a fixed one that starts after it).
        serve(pool, now=now)
    if effective_at <= now:
        change.served_at = now
        change.save(update_fields=["served_at"])
    return change


def _decrease_blockers(pool: Pool, gpus: int, effective_at: datetime) -> str:
    """Why removing `gpus` from `effective_at` on breaks the invariant, naming the allocations
    held at the instants that would be short; "" when it does not."""
    now = timezone.now()
    timeline = pool_timeline(pool.pk, origin=min(effective_at, now))
    steps = timeline.steps
    first = timeline._index_at(effective_at)
    short: list[tuple[datetime, datetime | None, int, int]] = []
    for i in range(first, len(steps)):
        step = steps[i]
        if step.free - gpus < 0:
            start = max(step.at, effective_at)
            end = steps[i + 1].at if i + 1 < len(steps) else None
            short.append((start, end, step.held, step.capacity - gpus))
    if not short:
        return ""
    held = holding_allocations().filter(pool=pool, end__gt=short[0][0]).select_related("project")
    in_way = [
        a
        for a in held.order_by("start", "pk")
        if any(a.end > s and (e is None or a.start < e) for s, e, _, _ in short)
    ]
    at, _, held_gpus, left = short[0]
    names = ", ".join(
        f"{a.project}'s {a.gpus} GPUs ({fmt(a.start)} → {fmt(a.end)})" for a in in_way[:20]
    )
    more = f" and {len(in_way) - 20} more" if len(in_way) > 20 else ""
    if left < 0:
        # Below zero whatever is allocated: say what it would leave, not a clamped 0.
        refusal = (
            f"Refused: removing {gpus} GPUs from {pool} from {fmt(effective_at)} would leave "
            f"{left} GPUs: it has only {left + gpus} at {fmt(at)}."
        )
    else:
        refusal = (
            f"Refused: removing {gpus} GPUs from {pool} from {fmt(effective_at)} would leave "
            f"{left} GPUs while {held_gpus} are allocated at {fmt(at)}."
        )
    if in_way:
        refusal += f" Allocations in the way: {names}{more}."
    return refusal
