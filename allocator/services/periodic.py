"""Periodic work (allocator/tasks.py runs it on beat): expiry, the serve-all safety net, the
resend sweep and the ending-soon reminders."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify
from notifications.wording import time_until_words

from .. import locks
from ..models import Allocation, AllocationChange, CapacityChange, LedgerEntry
from .changes import dispatch
from .engine import serve
from .records import Status, fmt, ledger, project_link, team_members


def allocations_expire(*, now: datetime | None = None, limit: int = 2000) -> int:
    """Allocations end at their end time (state ended, ledger expire); each pool's queue is
    then served. One transaction per pool."""
    now = now or timezone.now()
    due = list(
        Allocation.objects.filter(state=Allocation.State.ACTIVE, end__lte=now)
        .order_by("end", "pk")
        .values_list("pk", "pool_id")[:limit]
    )
    per_pool: dict[int, list[int]] = defaultdict(list)
    for allocation_id, pool_id in due:
        per_pool[pool_id].append(allocation_id)
    ended = 0
    for pool_id, ids in sorted(per_pool.items()):
        with transaction.atomic():
            pool = locks.lock_pool(pool_id)
            for allocation in locks.lock_allocations(ids).values():
                if allocation.state != Allocation.State.ACTIVE or allocation.end > now:
                    continue
                allocation.state = Allocation.State.ENDED
                allocation.save(update_fields=["state"])
                ledger(allocation=allocation, kind=LedgerEntry.Kind.EXPIRE)
                audit_record(
                    actor=None,
                    action="allocation.expire",
                    obj=allocation,
                    before={"state": Allocation.State.ACTIVE},
                    after={"state": allocation.state},
                    message=f"Allocation #{allocation.pk} reached its end.",
                )
                ended += 1
            serve(pool, now=now)
    return ended


def queues_serve_all(*, now: datetime | None = None) -> int:
    """Serve every pool that has waiting requests or a capacity change that just took effect
    (then marked served). The safety net behind the event-driven serving."""
    now = now or timezone.now()
    due_pools = set(
        CapacityChange.objects.filter(served_at__isnull=True, effective_at__lte=now).values_list(
            "pool_id", flat=True
        )
    )
    waiting_pools = set(
        AllocationChange.objects.filter(status=Status.WAITING).values_list("pool_id", flat=True)
    )
    pool_ids = sorted(due_pools | waiting_pools)
    for pool_id in pool_ids:
        with transaction.atomic():
            pool = locks.lock_pool(pool_id)
            serve(pool, now=now)
            CapacityChange.objects.filter(
                pool_id=pool_id, served_at__isnull=True, effective_at__lte=now
            ).update(served_at=now)
    return len(pool_ids)


def changes_resend_stuck(*, now: datetime | None = None, limit: int = 500) -> int:
    """Send again every pending change that no worker took within RESEND_AFTER_SECONDS (the
    broker lost the message, the worker died before acking and the message expired, the
    dispatch itself failed). Harmless when it was merely slow: the apply is idempotent."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.ALLOTMENT["RESEND_AFTER_SECONDS"])
    stuck = list(
        AllocationChange.objects.filter(status=Status.PENDING)
        .filter(Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True, approved_at__lt=cutoff))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    for change_id in stuck:
        dispatch(change_id)
    return len(stuck)


def allocations_remind_ending(*, now: datetime | None = None) -> int:
    """Tell owners 7 days and 1 day before an allocation ends (once each: reminded_*_at and the
    notification's dedupe key)."""
    now = now or timezone.now()
    sent = 0
    for days, field in ((1, "reminded_1d_at"), (7, "reminded_7d_at")):
        due = (
            Allocation.objects.filter(
                state=Allocation.State.ACTIVE,
                end__gt=now,
                end__lte=now + timedelta(days=days),
                **{f"{field}__isnull": True},
            )
            .select_related("project", "pool")
            .order_by("end", "pk")[:2000]
        )
        for allocation in due:
            with transaction.atomic():
                marked = Allocation.objects.filter(
                    pk=allocation.pk, **{f"{field}__isnull": True}
                ).update(**{field: now})
                if not marked:
                    continue
                if days == 1:  # one message, not two, when the week's notice comes this late
                    Allocation.objects.filter(pk=allocation.pk, reminded_7d_at__isnull=True).update(
                        reminded_7d_at=now
                    )
                when = time_until_words(allocation.end - now)
                notify(
                    recipients=team_members(allocation.project.team_id),
                    kind=Notification.Kind.ENDING_SOON,
                    message=f"{allocation.gpus} GPUs of {allocation.pool} held by "
                    f"{allocation.project} end {when}, {fmt(allocation.end)}.",
                    link=project_link(allocation.project_id),
                    dedupe_key=f"allocation-{allocation.pk}-ending-{days}d",
                )
                sent += 1
    return sent
