"""The cross-app pages (PRODUCT.md section 5), above the domain apps: the overview (pools,
shares, charts, my requests and approvals) and the project pages (a project's allocations,
requests, end date and state). A confidential project's requests and allocations show only to
those org.visibility lets see them; others see that it exists."""

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Q, Sum
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from allocator.models import Allocation, CapacityChange, Pool
from allocator.scheduled import scheduled_reclaims_for_project
from allocator.selectors import PoolStatus, horizon, waiting_demand
from allocator.shares import balance, cached_daily_load, cached_pool_summaries
from common.charts import Bar, Point, bar_chart, step_chart, weekly_rows
from common.listing import keyset_page
from org.models import Project
from org.roles import roles_of
from org.visibility import can_see_project
from requests_app.forecasts import forecasts_for
from requests_app.models import ComputeRequest
from requests_app.selectors import inbox_for, requests_visible_to
from requests_app.workflow import Status

EXPIRY_WINDOW = timedelta(days=14)
UPCOMING_LIMIT = 10
MY_REQUESTS_LIMIT = 10
MY_GPUS_LIMIT = 20  # per list of "My GPUs"


def my_gpus(user, team_ids, *, now) -> dict:
    """ "My GPUs" (issue 12): what the user's teams hold now, what starts when, and what waits
    with its expected start, in one glance. Bounded queries: held and scheduled allocations (1),
    the teams' approved and waiting requests (1), their forecasts (allocator.forecast: the stored
    forecasts, one query while fresh)."""
    if not team_ids:
        return {"held": [], "scheduled": [], "waiting": [], "held_gpus": 0}
    allocations = list(
        Allocation.objects.filter(
            project__team_id__in=team_ids, state=Allocation.State.ACTIVE, end__gt=now
        )
        .select_related("pool", "project")
        .order_by("start", "id")[: 2 * MY_GPUS_LIMIT]
    )
    held = [a for a in allocations if a.start <= now][:MY_GPUS_LIMIT]
    scheduled = [a for a in allocations if a.start > now][:MY_GPUS_LIMIT]
    waiting = list(
        ComputeRequest.objects.filter(
            project__team_id__in=team_ids, status__in=[Status.WAITING, Status.APPROVED]
        )
        .select_related("pool", "project", "change")
        .order_by("approved_at", "id")[:MY_GPUS_LIMIT]
    )
    forecasts = forecasts_for(waiting, now=now)
    return {
        "held": held,
        "scheduled": scheduled,
        "waiting": [(r, forecasts.get(r.pk)) for r in waiting],
        "held_gpus": sum(a.gpus for a in held),
    }


def _selected_pool(raw: str | None, pools: list[Pool]) -> Pool | None:
    if raw and raw.isdigit() and len(raw) < 19:
        return next((p for p in pools if p.pk == int(raw)), None)
    return None


@login_required
def overview(request):
    """The landing page (PRODUCT.md section 5). A bounded number of queries whatever the number
    of pools, allocations or requests, and the same whatever the number of pools when none
    changed: the per-pool figures and the chart come from the per-pool cache
    (allocator/shares/cached.py: one query for the pools' marks; on a miss, two more for all
    the changed pools and one for the chart), the waiting demand from one grouped query,
    and every list is capped."""
    now = timezone.now()
    user = request.user
    roles = roles_of(user)
    days = horizon().days

    pools = list(Pool.objects.all())
    summaries = cached_pool_summaries(pools, origin=now)
    waiting = waiting_demand(pools)
    statuses = [
        PoolStatus(
            pool=p,
            capacity=summaries[p.pk].capacity_now,
            allocated=summaries[p.pk].held_now,
            waiting=waiting.get(p.pk, 0),
        )
        for p in pools
    ]

    # Capacity against commitments: one pool (?pool=<id>) or all pools summed, by UTC
    # calendar day from today's (so the chart is kept until a pool changes or the day ends).
    chosen = _selected_pool(request.GET.get("pool"), pools)
    scope = chosen.name if chosen is not None else "all pools"
    points = [
        Point(*p)
        for p in cached_daily_load(
            [chosen] if chosen else pools, days=days, now=now, summaries=summaries
        )
    ]
    capacity_chart = step_chart(
        points,
        id_prefix="capacity-chart",
        title=f"Capacity and commitments, {scope}, {days} days from today (UTC days)",
        desc=(
            f"Step line: GPUs installed each day ({scope}); filled area: GPUs committed to "
            "allocations, scheduled ones included. Each UTC calendar day, today's from 00:00 "
            "UTC, shows its lowest capacity and its highest commitment. The table below lists "
            "the same numbers by week."
        ),
    )

    # Each division's holding against its share, per pool (or only the chosen pool).
    balances = balance(
        origin=now, pools=[chosen] if chosen else pools, summaries=summaries, with_reclaim=False
    )
    share_rows = [row for pb in balances for row in pb.rows]
    holdings_chart = bar_chart(
        [
            Bar(
                label=f"{row.pool.name} · {row.division.name}",
                value=row.held_now,
                reference=row.share,
                scale=summaries[row.pool.pk].capacity_now,
            )
            for row in share_rows
        ],
        id_prefix="holdings-chart",
        title="Each division's holding against its share, per pool",
        desc=(
            "For each pool and division, a bar of the GPUs held now on the scale of the pool's "
            "capacity, and a marker at the division's share. Red bars are above the share. "
            "The table below lists the same numbers."
        ),
    )

    arrivals = list(
        CapacityChange.objects.filter(effective_at__gt=now, delta__gt=0)
        .select_related("pool")
        .order_by("effective_at", "id")[:UPCOMING_LIMIT]
    )
    expiries = list(
        Allocation.objects.filter(
            state=Allocation.State.ACTIVE, end__gt=now, end__lte=now + EXPIRY_WINDOW
        )
        .select_related("pool", "project__team")
        .order_by("end", "id")[:UPCOMING_LIMIT]
    )
    for allocation in expiries:
        allocation.project_visible = can_see_project(user, allocation.project)

    my_requests = list(
        ComputeRequest.objects.filter(requester=user)
        .select_related("project", "pool")
        .order_by("-created_at", "-id")[:MY_REQUESTS_LIMIT]
    )
    approvals_waiting = (
        inbox_for(user).count() if roles.is_division_lead or roles.is_executive else None
    )
    gpus = my_gpus(user, roles.team_ids, now=now)

    return render(
        request,
        "common/overview.html",
        {
            "pools": statuses,
            "chosen_pool": chosen,
            "all_pools": pools,
            "capacity_chart": capacity_chart,
            "capacity_rows": weekly_rows(points),
            "holdings_chart": holdings_chart,
            "share_rows": share_rows,
            "arrivals": arrivals,
            "expiries": expiries,
            "expiry_days": EXPIRY_WINDOW.days,
            "my_requests": my_requests,
            "approvals_waiting": approvals_waiting,
            "my_gpus": gpus,
            "is_researcher": bool(roles.team_ids),
            "days": days,
        },
    )


def _other_params(request, own: str) -> str:
    """The page's query without `own` (the cursor a navigation link sets)."""
    query = request.GET.copy()
    query.pop(own, None)
    return query.urlencode()


@login_required
def project_list(request):
    now = timezone.now()
    projects = Project.objects.select_related("team__division")
    q = (request.GET.get("q") or "").strip()[:100]
    state = request.GET.get("state") or ""
    if q:
        projects = projects.filter(Q(name__icontains=q) | Q(team__name__icontains=q))
    if state in Project.State.values:
        projects = projects.filter(state=state)
    if request.GET.get("mine"):
        projects = projects.filter(team_id__in=list(roles_of(request.user).team_ids))
    # By name, "previous / next" from a cursor on (name, id): no COUNT(*), and the GPUs held are
    # summed for this page's projects only (docs/performance.md, "HTML lists").
    page = keyset_page(projects, ordering=("name", "id"), cursor=request.GET.get("cursor"), size=50)
    held = dict(
        Allocation.objects.filter(
            project__in=[p.pk for p in page],
            state=Allocation.State.ACTIVE,
            start__lte=now,
            end__gt=now,
        )
        .values("project_id")
        .annotate(total=Sum("gpus"))
        .values_list("project_id", "total")
    )
    for project in page:
        project.gpus_held = held.get(project.pk, 0)
    return render(
        request,
        "org/project_list.html",
        {
            "page": page,
            "q": q,
            "state": state,
            "mine": bool(request.GET.get("mine")),
            "states": Project.State.choices,
            "query": _other_params(request, "cursor"),
        },
    )


@login_required
def project_detail(request, pk):
    project = get_object_or_404(Project.objects.select_related("team__division"), pk=pk)
    visible = can_see_project(request.user, project)
    now = timezone.now()
    context = {
        "project": project,
        "visible": visible,
        "is_member": roles_of(request.user).member_of(project.team_id),
        "now": now,
    }
    if visible:
        # All allocations, newest end first, a page at a time; "GPUs held" sums over all of
        # them in SQL (the page shows only some).
        # "newer / older" from a cursor on (end, id) (the index on project and end).
        allocations = keyset_page(
            project.allocations.select_related("pool", "change__request")
            # GPU-hours measured by the pool's scheduler connector (allocator.connectors).
            .prefetch_related("usage_days"),
            ordering=("-end", "-id"),
            cursor=request.GET.get("allocations"),
            size=50,
            param="allocations",
        )
        for allocation in allocations:
            days = list(allocation.usage_days.all())
            allocation.gpu_hours_used = sum(d.gpu_hours for d in days) if days else None
            held_hours = (min(now, allocation.end) - allocation.start).total_seconds() / 3600
            allocation.gpu_hours_allocated = max(0.0, held_hours) * allocation.gpus
            allocation.releasable = allocation.state == Allocation.State.ACTIVE and (
                allocation.end > now
            )
        context["allocations"] = allocations
        context["gpus_held"] = (
            project.allocations.filter(
                state=Allocation.State.ACTIVE, start__lte=now, end__gt=now
            ).aggregate(total=Sum("gpus"))["total"]
            or 0
        )
        context["scheduled"] = scheduled_reclaims_for_project(project.pk, user=request.user)
        context["is_ops"] = roles_of(request.user).is_compute_ops
        # requests_app's rule: the project's requests this viewer may see (drafts only to
        # the team).
        requests = requests_visible_to(request.user).filter(project=project)
        context["requests"] = keyset_page(
            requests,
            ordering=("-created_at", "-id"),
            cursor=request.GET.get("requests"),
            size=25,
            param="requests",
        )
        context["allocations_query"] = _other_params(request, "allocations")
        context["requests_query"] = _other_params(request, "requests")
    return render(request, "org/project_detail.html", context)
