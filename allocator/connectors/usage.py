"""What the cluster used: GPU-hours per project account from the scheduler's accounting
(`sacct --json`), stored per allocation and day (AllocationUsage), and the allocations that sit
idle. A job's GPU-seconds on a day go to the project's allocations in that pool that held GPUs
then, in proportion to their GPUs x overlap; days are UTC and recomputed whole, so a repeat run
writes the same rows."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from allocator.models import Allocation
from allocator.selectors import HOLDING_STATES, holding_allocations
from allocator.signals import MeasuredUse
from audit.services import audit_record

from .models import AllocationUsage, PoolAccount, PoolConnector
from .slurm import Slurm, SlurmError

LOOKBACK_DAYS = 2


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def usage_collect(
    *, connector_id: int, now: datetime | None = None, days: int = LOOKBACK_DAYS
) -> int:
    """Measure the last `days` UTC days (today included) of one pool; returns rows written."""
    now = now or timezone.now()
    connector = PoolConnector.objects.select_related("pool").get(pk=connector_id)
    first_day = (now - timedelta(days=days - 1)).astimezone(UTC).date()
    window_start = _day_start(first_day)
    accounts = dict(
        PoolAccount.objects.filter(connector=connector).values_list("account_name", "project_id")
    )
    if not accounts:
        return 0
    try:
        jobs = Slurm.for_connector(connector).job_usage(
            start=window_start, end=now, accounts=sorted(accounts)
        )
    except SlurmError as error:
        with transaction.atomic():
            audit_record(
                actor=None,
                action="connector.usage_failed",
                obj=connector,
                after={"command": error.command, "output": error.output[-1000:]},
                message=f"Could not read usage of {connector.pool}: {error}",
            )
        raise
    # Held allocations, and released or reclaimed ones over the part they did hold (the engine
    # cuts their end at the release; one given back before it started never ran: its end is
    # still ahead of the release, so `end <= now` leaves it out until then).
    allocations = list(
        Allocation.objects.filter(
            Q(state__in=HOLDING_STATES)
            | Q(state__in=[Allocation.State.RELEASED, Allocation.State.RECLAIMED], end__lte=now),
            pool_id=connector.pool_id,
            project_id__in=set(accounts.values()),
            start__lt=now,
            end__gt=window_start,
        )
    )
    by_project: dict[int, list[Allocation]] = defaultdict(list)
    for a in allocations:
        by_project[a.project_id].append(a)
    used: dict[tuple[int, date], float] = defaultdict(float)  # (allocation, day) -> GPU-hours
    for job in jobs:
        project_id = accounts.get(job["account"])
        if project_id is None or not job["start"]:
            continue
        start = max(datetime.fromtimestamp(job["start"], UTC), window_start)
        end = min(datetime.fromtimestamp(job["end"], UTC) if job["end"] else now, now)
        day = start.date()
        while _day_start(day) < end:
            lo, hi = max(start, _day_start(day)), min(end, _day_start(day + timedelta(days=1)))
            if hi > lo:
                _spread(used, by_project[project_id], lo, hi, job["gpus"], day)
            day += timedelta(days=1)
    rows = 0
    with transaction.atomic():
        for a in allocations:
            day = max(a.start, window_start).date()
            while _day_start(day) < min(a.end, now):
                AllocationUsage.objects.update_or_create(
                    allocation=a,
                    day=day,
                    defaults={
                        "gpu_hours": round(used.get((a.pk, day), 0.0), 4),
                        "measured_at": now,
                    },
                )
                rows += 1
                day += timedelta(days=1)
    return rows


def _spread(used, allocations, lo, hi, gpus, day) -> None:
    weights = []
    for a in allocations:
        overlap = (min(hi, a.end) - max(lo, a.start)).total_seconds()
        if overlap > 0:
            weights.append((a, a.gpus * overlap))
    total = sum(w for _, w in weights)
    if not total:
        return  # ran with no allocation held (before a grant): nothing to charge
    gpu_hours = gpus * (hi - lo).total_seconds() / 3600
    for a, w in weights:
        used[(a.pk, day)] += gpu_hours * w / total


def usage_collect_all() -> int:
    rows = 0
    pool_ids = []
    for connector_id, pool_id in PoolConnector.objects.values_list("pk", "pool_id"):
        try:
            rows += usage_collect(connector_id=connector_id)
            pool_ids.append(pool_id)
        except SlurmError:
            continue  # audited; the next run measures the same days again
    idle_notify(pool_ids=pool_ids)
    return rows


def idle_notify(*, pool_ids, now: datetime | None = None) -> int:
    """Tell each idle allocation's team and compute ops, once a day per allocation."""
    from django.contrib.auth import get_user_model

    from notifications.models import Notification
    from notifications.services import notify
    from org.models import RoleGrant

    now = now or timezone.now()
    idle = idle_allocations(now=now, pool_ids=pool_ids)
    hours = settings.ALLOTMENT_CONNECTORS["IDLE_HOURS"]
    for allocation in Allocation.objects.filter(pk__in=idle).select_related("pool", "project"):
        users = (
            get_user_model()
            .objects.filter(
                Q(memberships__team_id=allocation.project.team_id)
                | Q(role_grants__role=RoleGrant.Role.COMPUTE_OPS),
                is_active=True,
            )
            .distinct()
        )
        with transaction.atomic():
            notify(
                recipients=list(users),
                kind=Notification.Kind.INFO,
                message=(
                    f"{allocation.project}'s {allocation.gpus} GPUs of {allocation.pool} used "
                    f"{idle[allocation.pk]:.0%} of their GPU-hours over the last {hours} hours: "
                    "release them if the work is done."
                ),
                dedupe_key=f"idle:{allocation.pk}:{now.astimezone(UTC).date()}",
            )
    return len(idle)


def idle_allocations(
    *, now: datetime | None = None, pool_ids=None, allocation_ids=None
) -> dict[int, float]:
    """Allocations held for at least IDLE_HOURS whose measured use over the last IDLE_HOURS is
    below IDLE_USE_BELOW of their GPU-hours: {allocation id: share used}. Two queries."""
    conf = settings.ALLOTMENT_CONNECTORS
    now = now or timezone.now()
    hours = conf["IDLE_HOURS"]
    since = now - timedelta(hours=hours)
    candidates = holding_allocations().filter(start__lte=since, end__gt=now)
    if pool_ids is not None:
        candidates = candidates.filter(pool_id__in=pool_ids)
    if allocation_ids is not None:
        candidates = candidates.filter(pk__in=allocation_ids)
    candidates = candidates.filter(usage_days__isnull=False).distinct()
    measured = dict(
        AllocationUsage.objects.filter(
            allocation__in=candidates, day__gte=since.astimezone(UTC).date()
        )
        .values("allocation_id")
        .annotate(total=Sum("gpu_hours"))
        .values_list("allocation_id", "total")
    )
    window_start = _day_start(since.astimezone(UTC).date())
    idle = {}
    for a in candidates:
        # Day rows cover whole days from window_start: compare with what the allocation could
        # have used since then.
        possible = a.gpus * (now - max(a.start, window_start)).total_seconds() / 3600
        share = (measured.get(a.pk) or 0.0) / possible if possible else 1.0
        if share < conf["IDLE_USE_BELOW"]:
            idle[a.pk] = share
    return idle


def idle_usage_for(sender, *, allocation_ids, now, **kwargs) -> dict[int, MeasuredUse]:
    """The domain's question (allocator.signals.allocation_usage_requested): which of these
    allocations were measured idle, and how much of their GPU-hours they used."""
    hours = settings.ALLOTMENT_CONNECTORS["IDLE_HOURS"]
    return {
        pk: MeasuredUse(share=share, hours=hours)
        for pk, share in idle_allocations(now=now, allocation_ids=allocation_ids).items()
    }


# --- the usage report -------------------------------------------------------------------------

LEVELS = ("division", "team", "project")


def _month_starts(now: datetime, months: int) -> list[datetime]:
    first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    starts = [first]
    for _ in range(months - 1):
        prev = (starts[-1] - timedelta(days=1)).replace(day=1)
        starts.append(prev)
    return sorted(starts)


def usage_report(
    *, level: str = "project", months: int = 6, now: datetime | None = None
) -> list[dict]:
    """GPU-hours allocated (held, up to now) and used (measured) per division, team or project
    and month, over the last `months` months: rows of {"name", "month", "allocated", "used",
    "measured"}. Two queries."""
    if level not in LEVELS:
        raise ValueError(f"level is one of {', '.join(LEVELS)}")
    now = now or timezone.now()
    starts = _month_starts(now, months)
    bounds = [(s, starts[i + 1] if i + 1 < len(starts) else now) for i, s in enumerate(starts)]
    key = {
        "division": "project__team__division__name",
        "team": "project__team__name",
        "project": "project__name",
    }[level]
    allocated: dict[tuple[str, str], float] = defaultdict(float)
    for start, end, gpus, name in (
        holding_allocations()
        .filter(start__lt=now, end__gt=starts[0])
        .values_list("start", "end", "gpus", key)
        .iterator()
    ):
        for lo, hi in bounds:
            overlap = (min(end, hi) - max(start, lo)).total_seconds()
            if overlap > 0:
                allocated[(name, f"{lo:%Y-%m}")] += gpus * overlap / 3600
    used: dict[tuple[str, str], float] = defaultdict(float)
    for day, hours, name in AllocationUsage.objects.filter(day__gte=starts[0].date()).values_list(
        "day", "gpu_hours", f"allocation__{key}"
    ):
        used[(name, f"{day:%Y-%m}")] += hours
    rows = []
    for name, month in sorted(set(allocated) | set(used)):
        rows.append(
            {
                "name": name,
                "month": month,
                "allocated": round(allocated.get((name, month), 0.0), 1),
                "used": round(used.get((name, month), 0.0), 1),
                "measured": (name, month) in used,
            }
        )
    return rows
