"""Giving GPUs back early: the owning team releases all of an allocation now, some of its GPUs,
or ends it sooner, without approval (reclaims.py holds what compute ops take back)."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from org.roles import roles_of

from .. import locks
from ..models import Allocation, LedgerEntry, Reclaim
from .engine import serve
from .records import fmt, ledger, snapshot


def pool_id_of_allocation(allocation_id: int) -> int:
    pool_id = Allocation.objects.filter(pk=allocation_id).values_list("pool_id", flat=True).first()
    if pool_id is None:
        raise Allocation.DoesNotExist(f"allocation {allocation_id} does not exist")
    return pool_id


def give_back(allocation: Allocation, *, at: datetime, state: str) -> None:
    """The allocation stops holding GPUs at `at`: its end is cut there when it had started (its
    past holding stays true), and it leaves every holding (loaders.HOLDING_STATES)."""
    if allocation.start < at < allocation.end:
        allocation.end = at
    allocation.state = state
    allocation.save(update_fields=["end", "state"])


def cancel_scheduled_reclaims(allocation: Allocation, *, actor, why: str) -> None:
    for reclaim in locks.lock_scheduled_reclaims(allocation.pk):
        reclaim.status = Reclaim.Status.CANCELLED
        reclaim.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action="reclaim.cancel",
            obj=reclaim,
            before={"status": Reclaim.Status.SCHEDULED},
            after={"status": reclaim.status},
            message=why,
        )


@transaction.atomic
def allocation_release(
    *,
    allocation_id: int,
    actor,
    gpus: int | None = None,
    end: datetime | None = None,
) -> Allocation:
    """The owning team gives its GPUs back early, without approval: all of them now (no
    arguments), `gpus` of them from now on, and/or the allocation ends at the earlier `end`.
    Kept GPUs count over the whole allocation, as a reclaim's do; the ledger keeps the past."""
    pool = locks.lock_pool(pool_id_of_allocation(allocation_id))
    allocation = locks.lock_allocations([allocation_id])[allocation_id]
    if not roles_of(actor).member_of(allocation.project.team_id):
        raise PermissionDenied("Only members of the project's team can release its GPUs.")
    now = timezone.now()
    label = allocation_words(allocation)
    if allocation.state != Allocation.State.ACTIVE or allocation.end <= now:
        raise ValidationError(
            f"{label} is already {allocation.get_state_display().lower()}."
            if allocation.state != Allocation.State.ACTIVE
            else f"{label} has already ended."
        )
    errors: dict[str, list[str]] = {}
    if gpus is not None and not 1 <= gpus <= allocation.gpus:
        errors["gpus"] = [f"Give back from 1 to {allocation.gpus} GPUs."]
    earliest_end = max(now, allocation.start)
    if end is not None and not (earliest_end < end < allocation.end):
        errors["end"] = [
            f"End it between {fmt(earliest_end)} and its current end ({fmt(allocation.end)})."
        ]
    if errors:
        raise ValidationError(errors)
    before = snapshot(allocation)
    whole = (gpus is None and end is None) or (gpus == allocation.gpus)
    if whole:
        give_back(allocation, at=now, state=Allocation.State.RELEASED)
        what = f"released all {before['gpus']} GPUs of {pool} held by {allocation.project}"
    else:
        parts = []
        if gpus is not None:
            allocation.gpus -= gpus
            parts.append(f"gave back {gpus} of {before['gpus']} GPUs")
        if end is not None:
            allocation.end = end
            parts.append(f"ended it at {fmt(end)} instead of {fmt(before['end'])}")
        allocation.save(update_fields=["gpus", "end"])
        what = f"{' and '.join(parts)} ({label})"
    ledger(
        allocation=allocation,
        kind=LedgerEntry.Kind.RELEASE,
        actor=actor,
        note=f"The team {what}."[:500],
    )
    audit_record(
        actor=actor,
        action="allocation.release",
        obj=allocation,
        before=before,
        after=snapshot(allocation),
        message=f"{actor} {what}.",
    )
    if whole:
        cancel_scheduled_reclaims(allocation, actor=actor, why="The allocation was released.")
    serve(pool, now=now)
    return allocation


def allocation_words(allocation: Allocation) -> str:
    """How people name an allocation: its project, size, pool and end (never its id)."""
    return (
        f"{allocation.project}'s {allocation.gpus} GPUs of {allocation.pool} "
        f"until {fmt(allocation.end)}"
    )
