"""Taking GPUs back: compute ops reclaim (shrink or shorten, after a notice) or transfer to a
named approved change; reclaims whose notice is over take effect; scheduled reclaims are
cancelled or changed; GPUs are moved by picking; a project winds down. (release.py holds the
team's own early release.)"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify

from .. import locks
from ..models import MAX_NOTICE_HOURS, Allocation, AllocationChange, LedgerEntry, Pool, Reclaim
from ..signals import request_ids_for_changes
from .engine import place, serve
from .records import Status, fmt, ledger, project_link, require_compute_ops, snapshot, team_members
from .release import allocation_words, give_back, pool_id_of_allocation


@transaction.atomic
def allocation_reclaim(
    *,
    allocation_id: int,
    actor,
    new_gpus: int,
    new_end: datetime | None = None,
    reason: str,
    notice_hours: int | None = None,
    transfer_to_id: int | None = None,
    effective_at: datetime | None = None,
    notify_owners: bool = True,
) -> Reclaim:
    """Compute ops shrink (to `new_gpus`, 0 for all) and/or shorten (to `new_end`) an allocation,
    effective after a notice period (None: the setting); the owners are told at once. With
    `transfer_to_id`, the GPUs go to that approved change (pending or waiting, same pool) when
    the reclaim takes effect, in the same transaction. A notice of 0 takes effect at once.
    `effective_at` instead of a notice: at that time (a project's end date, say). With
    `notify_owners` off the caller tells the owners once for several reclaims.
    Arguments come parsed (ReclaimForm, ReclaimInputSerializer); this decides what is allowed."""
    require_compute_ops(actor)
    pool = locks.lock_pool(pool_id_of_allocation(allocation_id))
    allocation = locks.lock_allocations([allocation_id])[allocation_id]
    now = timezone.now()
    errors: dict[str, list[str]] = {}
    if allocation.state != Allocation.State.ACTIVE or allocation.end <= now:
        raise ValidationError(
            {"allocation": [f"{allocation_words(allocation)} no longer holds GPUs."]}
        )
    if effective_at is not None:
        notice_hours = max(0, math.ceil((effective_at - now).total_seconds() / 3600))
    if notice_hours is None:
        notice_hours = settings.ALLOTMENT["RECLAIM_NOTICE_HOURS"]
    reason = reason.strip()
    if not reason:
        errors["reason"] = ["This field is required."]
    if not 0 <= new_gpus <= allocation.gpus:
        errors["new_gpus"] = [f"Enter a number from 0 to {allocation.gpus}."]
    elif new_gpus == allocation.gpus and new_end is None:
        errors["new_gpus"] = ["Nothing to reclaim: keep fewer GPUs or set an earlier end."]
    notice_ok = 0 <= notice_hours <= MAX_NOTICE_HOURS
    if effective_at is None or not notice_ok:
        effective_at = now + timedelta(hours=notice_hours if notice_ok else 0)
    effective_at = max(effective_at, now)
    if not notice_ok:
        errors["notice_hours"] = [f"Enter a number from 0 to {MAX_NOTICE_HOURS}."]
    elif allocation.end <= effective_at:
        errors["notice_hours"] = [
            f"The allocation ends {fmt(allocation.end)}, before the notice period is over."
        ]
    elif new_end is not None and not (effective_at <= new_end < allocation.end):
        errors["new_end"] = [
            f"Shorten to a time between the end of the notice period ({fmt(effective_at)})"
            f" and the current end ({fmt(allocation.end)})."
        ]
    target = None
    if transfer_to_id is not None:
        target = (
            AllocationChange.objects.filter(pk=transfer_to_id).select_related("project").first()
        )
        if target is None:
            errors["transfer_to"] = ["Unknown approved request."]
        elif target.pool_id != pool.pk:
            errors["transfer_to"] = [f"Not a request for {pool}."]
        elif target.status not in (Status.PENDING, Status.WAITING):
            errors["transfer_to"] = [
                "Transfer only to an approved request that is pending or waiting."
            ]
        elif target.pk == allocation.change_id:
            errors["transfer_to"] = ["That request made this allocation."]
    if allocation.reclaims.filter(status=Reclaim.Status.SCHEDULED).exists():
        errors["allocation"] = [
            f"A reclaim of {allocation_words(allocation)} is already scheduled: change or cancel"
            " it on the ops console."
        ]
    if errors:
        raise ValidationError(errors)

    reclaim = Reclaim.objects.create(
        allocation=allocation,
        new_gpus=new_gpus,
        new_end=new_end,
        effective_at=effective_at,
        reason=reason,
        transfer_to=target,
        created_by=actor,
    )
    what = _reclaim_words(reclaim, allocation)
    audit_record(
        actor=actor,
        action="reclaim.schedule",
        obj=reclaim,
        after={
            "allocation": allocation.pk,
            "new_gpus": new_gpus,
            "new_end": new_end,
            "effective_at": effective_at,
            "transfer_to": target.pk if target else None,
        },
        message=f"{what} Reason: {reason}",
    )
    if notify_owners:
        notify(
            recipients=team_members(allocation.project.team_id),
            kind=Notification.Kind.RECLAIM,
            message=f"Reclaim notice: {what} Reason: {reason}",
            link=project_link(allocation.project_id),
            dedupe_key=f"reclaim-{reclaim.pk}-notice",
        )
    if effective_at <= now:
        _apply_reclaim(pool, reclaim, allocation, actor=actor, now=now)
        serve(pool, now=now)
    return reclaim


@transaction.atomic
def allocation_transfer(
    *,
    allocation_id: int,
    to_change_id: int,
    actor,
    new_gpus: int,
    new_end: datetime | None = None,
    reason: str,
    notice_hours: int | None = None,
) -> Reclaim:
    """A reclaim whose GPUs go to a named approved change when it takes effect."""
    return allocation_reclaim(
        allocation_id=allocation_id,
        actor=actor,
        new_gpus=new_gpus,
        new_end=new_end,
        reason=reason,
        notice_hours=notice_hours,
        transfer_to_id=to_change_id,
    )


def _reclaim_words(reclaim: Reclaim, allocation: Allocation) -> str:
    return f"{allocation_words(allocation)}: {reclaim_effect_words(reclaim, allocation)}."


def reclaim_effect_words(
    reclaim: Reclaim,
    allocation: Allocation,
    *,
    request_id: int | None = None,
    name_target: bool = True,
) -> str:
    """What a reclaim does, in words people read: request numbers, never a change id."""
    parts = []
    if reclaim.new_gpus == 0:
        parts.append(f"all {allocation.gpus} GPUs go back")
    elif reclaim.new_gpus < allocation.gpus:
        parts.append(f"{allocation.gpus - reclaim.new_gpus} of its {allocation.gpus} GPUs go back")
    if reclaim.new_end is not None and reclaim.new_gpus:
        parts.append(f"it ends {fmt(reclaim.new_end)} instead of {fmt(allocation.end)}")
    where = destination_words(reclaim, request_id=request_id, name_target=name_target)
    return f"{' and '.join(parts)} ({where}) from {fmt(reclaim.effective_at)}"


def destination_words(
    reclaim: Reclaim, *, request_id: int | None = None, name_target: bool = True
) -> str:
    """ "to the pool" or "to request #12 of Atlas" (`name_target` off: the viewer may not see
    that project)."""
    if not reclaim.transfer_to_id:
        return "to the pool"
    if not name_target:
        return "to another approved request"
    if request_id is None:
        request_id = request_ids_for_changes([reclaim.transfer_to_id]).get(reclaim.transfer_to_id)
    name = f"request #{request_id}" if request_id else "an approved request"
    target = reclaim.transfer_to
    return f"to {name} of {target.project}" if target is not None else f"to {name}"


def _apply_reclaim(
    pool: Pool, reclaim: Reclaim, allocation: Allocation, *, actor, now: datetime
) -> None:
    """Under the pool lock: the reclaim takes effect; for a transfer, the named change is placed
    in the same transaction, ahead of the queue (compute ops chose it)."""
    if allocation.state != Allocation.State.ACTIVE or allocation.end <= reclaim.effective_at:
        reclaim.status = Reclaim.Status.CANCELLED
        reclaim.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action="reclaim.cancel",
            obj=reclaim,
            before={"status": Reclaim.Status.SCHEDULED},
            after={"status": reclaim.status},
            message="The allocation no longer held GPUs when the reclaim came due.",
        )
        return
    before = snapshot(allocation)
    if reclaim.new_gpus == 0:
        give_back(allocation, at=reclaim.effective_at, state=Allocation.State.RECLAIMED)
    else:
        # Kept GPUs count over the whole allocation; its past holding is in the ledger.
        allocation.gpus = min(allocation.gpus, reclaim.new_gpus)
        if reclaim.new_end is not None and reclaim.new_end < allocation.end:
            allocation.end = reclaim.new_end
        allocation.save(update_fields=["gpus", "end"])
    kind = LedgerEntry.Kind.TRANSFER if reclaim.transfer_to_id else LedgerEntry.Kind.RECLAIM
    ledger(
        allocation=allocation,
        kind=kind,
        actor=reclaim.created_by,
        change=reclaim.transfer_to,
        note=reclaim.reason,
    )
    reclaim.status = Reclaim.Status.APPLIED
    reclaim.applied_at = now
    reclaim.save(update_fields=["status", "applied_at"])
    audit_record(
        actor=actor,
        action="allocation.transfer" if reclaim.transfer_to_id else "allocation.reclaim",
        obj=allocation,
        before=before,
        after={**snapshot(allocation), "reclaim": reclaim.pk},
        message=f"Reclaim #{reclaim.pk} took effect. Reason: {reclaim.reason}",
    )
    notify(
        recipients=team_members(allocation.project.team_id),
        kind=Notification.Kind.RECLAIM,
        message=f"Reclaim took effect on {allocation.project}'s allocation of {pool}: it now holds"
        f" {allocation.gpus if allocation.state == Allocation.State.ACTIVE else 0} GPUs"
        f" ({destination_words(reclaim)}). Reason: {reclaim.reason}",
        link=project_link(allocation.project_id),
        dedupe_key=f"reclaim-{reclaim.pk}-applied",
    )
    if reclaim.transfer_to_id:
        # SKIP LOCKED: if its apply worker holds the change, that worker places it next (it
        # waits for the pool lock we hold, then sees the GPUs this reclaim freed).
        target = locks.lock_change(reclaim.transfer_to_id, skip_locked=True)
        if target is not None and target.status in (Status.PENDING, Status.WAITING):
            place(pool, target, now=now)


def reclaims_apply_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """Reclaims whose notice is over take effect; each pool's queue is then served. One
    transaction per pool."""
    now = now or timezone.now()
    due = list(
        Reclaim.objects.filter(status=Reclaim.Status.SCHEDULED, effective_at__lte=now)
        .order_by("effective_at", "pk")
        .values_list("pk", "allocation_id", "allocation__pool_id")[:limit]
    )
    per_pool: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for reclaim_id, allocation_id, pool_id in due:
        per_pool[pool_id].append((reclaim_id, allocation_id))
    applied = 0
    for pool_id, items in sorted(per_pool.items()):
        with transaction.atomic():
            pool = locks.lock_pool(pool_id)
            allocations = locks.lock_allocations([a for _, a in items])
            reclaims = locks.lock_reclaims([r for r, _ in items])
            for reclaim_id, allocation_id in items:
                reclaim = reclaims.get(reclaim_id)
                if reclaim is None or reclaim.status != Reclaim.Status.SCHEDULED:
                    continue  # another run took it
                _apply_reclaim(pool, reclaim, allocations[allocation_id], actor=None, now=now)
                applied += 1
            serve(pool, now=now)
    return applied


@transaction.atomic
def reclaim_cancel(*, reclaim_id: int, actor, reason: str = "") -> Reclaim:
    """Compute ops call off a scheduled reclaim or transfer before it takes effect; the owners
    are told. The allocation never changed, so the audit trail is its record."""
    require_compute_ops(actor)
    reclaim, allocation = _lock_scheduled(reclaim_id)
    reclaim.status = Reclaim.Status.CANCELLED
    reclaim.save(update_fields=["status"])
    why = reason.strip()[:2000]
    audit_record(
        actor=actor,
        action="reclaim.cancel",
        obj=reclaim,
        before={"status": Reclaim.Status.SCHEDULED},
        after={"status": reclaim.status},
        message=f"{actor} cancelled the reclaim of {allocation_words(allocation)}"
        f" ({reclaim_effect_words(reclaim, allocation)}).{f' Reason: {why}' if why else ''}",
    )
    notify(
        recipients=team_members(allocation.project.team_id),
        kind=Notification.Kind.RECLAIM,
        message=f"Reclaim called off: {allocation_words(allocation)} keeps its GPUs.",
        link=project_link(allocation.project_id),
        dedupe_key=f"reclaim-{reclaim.pk}-cancelled",
    )
    return reclaim


@transaction.atomic
def reclaim_change(
    *,
    reclaim_id: int,
    actor,
    new_gpus: int,
    new_end: datetime | None = None,
    notice_hours: int | None = None,
    reason: str,
) -> Reclaim:
    """Compute ops change a scheduled reclaim's terms before it takes effect: the old one is
    cancelled and the new terms scheduled in one transaction (both on the audit trail; the
    owners get the new notice). Bad terms change nothing."""
    require_compute_ops(actor)
    old, allocation = _lock_scheduled(reclaim_id)
    old.status = Reclaim.Status.CANCELLED
    old.save(update_fields=["status"])
    new = allocation_reclaim(
        allocation_id=allocation.pk,
        actor=actor,
        new_gpus=new_gpus,
        new_end=new_end,
        reason=reason,
        notice_hours=notice_hours,
        transfer_to_id=old.transfer_to_id,
    )
    audit_record(
        actor=actor,
        action="reclaim.change",
        obj=old,
        before={"status": Reclaim.Status.SCHEDULED},
        after={"status": old.status, "replaced_by": new.pk},
        message=f"{actor} changed the reclaim of {allocation_words(allocation)}: "
        f"{reclaim_effect_words(new, allocation)}.",
    )
    return new


def _lock_scheduled(reclaim_id: int) -> tuple[Reclaim, Allocation]:
    row = Reclaim.objects.filter(pk=reclaim_id).values_list("allocation_id", flat=True).first()
    if row is None:
        raise Reclaim.DoesNotExist(f"reclaim {reclaim_id} does not exist")
    locks.lock_pool(pool_id_of_allocation(row))
    allocation = locks.lock_allocations([row])[row]
    reclaim = locks.lock_reclaims([reclaim_id])[reclaim_id]
    if reclaim.status != Reclaim.Status.SCHEDULED:
        raise ValidationError(
            f"This reclaim is already {reclaim.get_status_display().lower()}; it cannot change."
        )
    return reclaim, allocation
