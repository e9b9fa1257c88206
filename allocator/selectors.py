"""Reads about pools: capacity, holdings and the fit questions, from the database."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from common.charts import TimelineChart, TimelineItem, timeline_chart

from .loaders import HOLDING_STATES as HOLDING_STATES  # callers have always found it here
from .loaders import holding_allocations, load_pool_rows
from .models import Allocation, AllocationChange, CapacityChange, DivisionShare, Pool, Reclaim
from .timeline import Timeline


def horizon() -> timedelta:
    return timedelta(days=settings.ALLOTMENT["HORIZON_DAYS"])


def pool_timeline(pool_id: int, *, origin: datetime | None = None) -> Timeline:
    """The pool's capacity and holdings from `origin` (default now) on. Two queries."""
    origin = origin or timezone.now()
    return load_pool_rows([pool_id], origin=origin).timeline(pool_id, origin)


def division_timeline(
    pool_id: int, division_id: int, *, origin: datetime | None = None
) -> Timeline:
    """Holdings of one division in a pool (capacity is the pool's)."""
    origin = origin or timezone.now()
    rows = load_pool_rows(
        [pool_id],
        origin=origin,
        holdings=holding_allocations().filter(project__team__division_id=division_id),
    )
    return rows.timeline(pool_id, origin)


def fits(pool_id: int, gpus: int, start: datetime, end: datetime) -> bool:
    """Do `gpus` more fit in the pool at every instant of [start, end)?"""
    origin = min(start, timezone.now())
    return pool_timeline(pool_id, origin=origin).fits(gpus, start, end)


def earliest_start(pool_id: int, gpus: int, start: datetime, end: datetime) -> datetime | None:
    """The earliest start at or after `start` where `gpus` fit for the whole duration, within
    the horizon; None if there is none."""
    origin = min(start, timezone.now())
    return pool_timeline(pool_id, origin=origin).earliest_start(
        gpus, end - start, start, start + horizon()
    )


def max_capacity(pool_id: int) -> int:
    """The most GPUs the pool will ever hold at once, counting every scheduled change."""
    timeline = pool_timeline(pool_id)
    return max(step.capacity for step in timeline.steps)


@dataclass(frozen=True)
class ShareCheck:
    division_id: int
    share: int
    peak_after: int  # the division's peak holding over the range, with the request
    capacity_at_peak: int
    peak_at: datetime

    @property
    def exceeds(self) -> bool:
        return self.peak_after > self.share

    @staticmethod
    def _percent(part: int, whole: int) -> str:
        return f"{round(100 * part / whole)}%" if whole > 0 else "n/a"

    def sentence(self, division_name: str, pool_name: str) -> str:
        return (
            f"would put {division_name} at {self._percent(self.peak_after, self.capacity_at_peak)}"
            f" of {pool_name} ({self.peak_after} of {self.capacity_at_peak} GPUs), above its "
            f"{self._percent(self.share, self.capacity_at_peak)} share ({self.share} GPUs)"
        )


def share_check(
    *, pool_id: int, division_id: int, gpus: int, start: datetime, end: datetime
) -> ShareCheck:
    """The division's holding of the pool over [start, end) once `gpus` more are added, against
    its share (PRODUCT.md section 3, rule 1). No share row means a share of 0."""
    origin = min(start, timezone.now())
    timeline = division_timeline(pool_id, division_id, origin=origin)
    share = (
        DivisionShare.objects.filter(pool_id=pool_id, division_id=division_id)
        .values_list("gpus", flat=True)
        .first()
    ) or 0
    return share_check_on(
        timeline, division_id=division_id, share=share, gpus=gpus, start=start, end=end
    )


def share_check_on(
    timeline: Timeline, *, division_id: int, share: int, gpus: int, start: datetime, end: datetime
) -> ShareCheck:
    """The share rule on a division's timeline (its holdings of the pool, the pool's capacity):
    the one computation behind share_check, the requests' share effects and the forecast."""
    peak = timeline.peak_held(start, end)
    return ShareCheck(
        division_id=division_id,
        share=share,
        peak_after=peak.held + gpus,
        capacity_at_peak=peak.capacity,
        peak_at=peak.at,
    )


@dataclass(frozen=True)
class PoolStatus:
    pool: Pool
    capacity: int
    allocated: int
    waiting: int

    @property
    def free(self) -> int:
        return max(self.capacity - self.allocated, 0)

    @property
    def used_percent(self) -> int:
        return round(100 * self.allocated / self.capacity) if self.capacity else 0


def waiting_demand(pools) -> dict[int, int]:
    """{pool id: GPUs its waiting changes ask for} (pools without any left out). One query."""
    return dict(
        AllocationChange.objects.filter(
            status=AllocationChange.Status.WAITING, pool_id__in=[p.pk for p in pools]
        )
        .values("pool_id")
        .annotate(total=Sum("gpus"))
        .values_list("pool_id", "total")
    )


def pools_status(pools=None, *, at: datetime | None = None) -> list[PoolStatus]:
    """Capacity, allocated and waiting demand of each pool as of `at` (default now), in three
    aggregate queries whatever the number of pools."""
    at = at or timezone.now()
    pools = list(pools if pools is not None else Pool.objects.all())
    ids = [p.pk for p in pools]
    capacity = dict(
        CapacityChange.objects.filter(pool_id__in=ids, effective_at__lte=at)
        .values("pool_id")
        .annotate(total=Sum("delta"))
        .values_list("pool_id", "total")
    )
    allocated = dict(
        holding_allocations()
        .filter(pool_id__in=ids, start__lte=at, end__gt=at)
        .values("pool_id")
        .annotate(total=Sum("gpus"))
        .values_list("pool_id", "total")
    )
    waiting = waiting_demand(pools)
    return [
        PoolStatus(
            pool=p,
            capacity=capacity.get(p.pk) or 0,
            allocated=allocated.get(p.pk) or 0,
            waiting=waiting.get(p.pk) or 0,
        )
        for p in pools
    ]


# --- The waiting queue ---

QUEUE_ORDER = ("-priority", "approved_at", "id")


class Queued(Protocol):
    """A change as the queue orders it: an AllocationChange, or the forecast's SimChange."""

    @property
    def priority(self) -> int: ...

    @property
    def approved_at(self) -> datetime: ...

    @property
    def pk(self) -> int: ...


def queue_key(change: Queued) -> tuple[int, datetime, int]:
    """The queue order in Python: priority first (higher serves first), then approval time."""
    return (-change.priority, change.approved_at, change.pk)


def waiting_queue(pool_id: int):
    """The pool's waiting changes in the order they are served, with project and team."""
    return (
        AllocationChange.objects.filter(pool_id=pool_id, status=AllocationChange.Status.WAITING)
        .select_related("project__team__division", "requested_by")
        .order_by(*QUEUE_ORDER)
    )


def queue_positions(change_ids: Iterable[int]) -> dict[int, int]:
    """1-based place of each WAITING change in its pool's queue, in one query whatever the number
    of changes. The window runs over every waiting change of the pools concerned; only then are
    the asked-for rows picked (filtering first would number them among themselves)."""
    ids = sorted({int(i) for i in change_ids})
    if not ids:
        return {}
    table = AllocationChange._meta.db_table
    sql = f"""
        SELECT id, position FROM (
            SELECT id, ROW_NUMBER() OVER (
                PARTITION BY pool_id ORDER BY priority DESC, approved_at, id
            ) AS position
            FROM {table}
            WHERE status = %s AND pool_id IN (SELECT pool_id FROM {table} WHERE id = ANY(%s))
        ) AS queue
        WHERE id = ANY(%s)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [AllocationChange.Status.WAITING, ids, ids])
        return {row[0]: row[1] for row in cursor.fetchall()}


# --- Scoped reads for pages and the API ---


def allocations_for_user(user):
    """Allocations the user may see: all but confidential projects' ones outside the circle
    allowed to see them (org.visibility)."""
    from org.visibility import visible_projects_q

    return (
        Allocation.objects.filter(visible_projects_q(user, "project__"))
        .select_related("pool", "project__team__division")
        .order_by("-start", "-id")
    )


def allocation_get_for_user(user, allocation_id) -> Allocation:
    """The allocation, or Allocation.DoesNotExist (-> 404) when the user may not see it."""
    return allocations_for_user(user).get(pk=allocation_id)


def pool_chart(
    pool_id: int,
    *,
    user,
    start: datetime | None = None,
    days: int = 90,
    max_bars: int = 60,
) -> TimelineChart:
    """The pool page's timeline (drawn by common.charts): the step series summed in PostgreSQL
    (shares.summaries.pool_steps), and the first `max_bars` allocations of the window as bars.
    Three queries whatever the number of allocations: the steps, the bars (with how many were
    left out), the bars' scheduled reclaims."""
    from django.db.models import Count, Window

    from org.visibility import can_see_project

    from .shares.summaries import pool_steps

    now = timezone.now()
    start = start or now - timedelta(days=7)
    end = now + timedelta(days=days)
    allocations = list(
        holding_allocations()
        .filter(pool_id=pool_id, end__gt=start, start__lt=end)
        .select_related("project__team")
        .annotate(in_window=Window(Count("id")))
        .order_by("start", "id")[:max_bars]
    )
    # Scheduled reclaims are drawn ahead of time: the held line drops at their effective time
    # (pool_steps) and the part given back is a bar of its own. The latest one counts.
    pending = {
        r.allocation_id: r
        for r in Reclaim.objects.filter(
            status=Reclaim.Status.SCHEDULED, allocation__in=[a.pk for a in allocations]
        ).order_by("effective_at", "id")
    }
    items = []
    for a in allocations:
        visible = can_see_project(user, a.project)
        name = a.project.name if visible else "Confidential project"
        items.append(
            TimelineItem(
                start=a.start,
                end=a.end,
                label=f"{name} · {a.gpus}",
                title=f"{name}: {a.gpus} GPUs, {a.start:%Y-%m-%d %H:%M} → "
                f"{a.end:%Y-%m-%d %H:%M} UTC",
                css="bar" if visible else "bar-confidential",
            )
        )
        r = pending.get(a.pk)
        if r is not None and r.effective_at < a.end:
            back = a.gpus - r.new_gpus if r.new_gpus else a.gpus
            cut = r.effective_at if back else (r.new_end or r.effective_at)
            items.append(
                TimelineItem(
                    start=max(cut, a.start),
                    end=a.end,
                    label=f"Reclaim scheduled · {name} −{back or a.gpus}",
                    title=f"Reclaim scheduled: {name} gives back {back or a.gpus} of {a.gpus}"
                    f" GPUs from {cut:%Y-%m-%d %H:%M} UTC",
                    css="bar-reclaim",
                )
            )
    in_window = allocations[0].in_window if allocations else 0
    return timeline_chart(
        pool_steps(pool_id, origin=start, until=end),
        items,
        start=start,
        end=end,
        now=now,
        left_out=max(in_window - max_bars, 0),
    )


@dataclass(frozen=True)
class EndingProject:
    project: object
    gpus_held: int


def projects_ending_soon(*, days: int = 30) -> list[EndingProject]:
    """Projects whose expected end is within `days` and that hold GPUs now (one query)."""
    from django.db.models import Sum

    from org.models import Project

    now = timezone.now()
    rows = (
        Project.objects.filter(
            expected_end__lte=(now + timedelta(days=days)).date(),
            allocations__state=Allocation.State.ACTIVE,
            allocations__start__lte=now,
            allocations__end__gt=now,
        )
        .annotate(gpus_held=Sum("allocations__gpus"))
        .select_related("team__division")
        .order_by("expected_end", "name")
    )
    return [EndingProject(project=p, gpus_held=p.gpus_held) for p in rows]
