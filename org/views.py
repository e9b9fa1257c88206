"""Project pages (PRODUCT.md section 5): the list, and a project's allocations, requests, end date
and state. A confidential project's requests and allocations show only to its team, its
division's leads, executives and compute ops; others see that it exists."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q, Sum
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from allocator.models import Allocation
from allocator.policies import can_see_confidential
from org.roles import roles_of

from .models import Project


@login_required
def project_list(request):
    now = timezone.now()
    projects = (
        Project.objects.select_related("team__division")
        .annotate(
            gpus_held=Sum(
                "allocations__gpus",
                filter=Q(
                    allocations__state=Allocation.State.ACTIVE,
                    allocations__start__lte=now,
                    allocations__end__gt=now,
                ),
            )
        )
        .order_by("name")
    )
    q = (request.GET.get("q") or "").strip()[:100]
    state = request.GET.get("state") or ""
    if q:
        projects = projects.filter(Q(name__icontains=q) | Q(team__name__icontains=q))
    if state in Project.State.values:
        projects = projects.filter(state=state)
    if request.GET.get("mine"):
        projects = projects.filter(team_id__in=list(roles_of(request.user).team_ids))
    page = Paginator(projects, 50).get_page(request.GET.get("page"))
    query = "&".join(
        f"{k}={v}" for k, v in (("q", q), ("state", state), ("mine", request.GET.get("mine"))) if v
    )
    return render(
        request,
        "org/project_list.html",
        {
            "page": page,
            "q": q,
            "state": state,
            "mine": bool(request.GET.get("mine")),
            "states": Project.State.choices,
            "query": query,
        },
    )


@login_required
def project_detail(request, pk):
    project = get_object_or_404(Project.objects.select_related("team__division"), pk=pk)
    visible = can_see_confidential(request.user, project)
    now = timezone.now()
    context = {
        "project": project,
        "visible": visible,
        "is_member": roles_of(request.user).member_of(project.team_id),
        "now": now,
    }
    if visible:
        allocations = list(
            project.allocations.select_related("pool", "change__request")
            # GPU-hours measured by the pool's scheduler connector (allocator.connectors).
            .prefetch_related("usage_days")
            .order_by("-end", "-id")[:100]
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
        context["gpus_held"] = sum(
            a.gpus
            for a in allocations
            if a.state == Allocation.State.ACTIVE and a.start <= now < a.end
        )
        requests = project.requests.select_related("pool", "requester")
        if not context["is_member"]:  # drafts are the team's own business
            requests = requests.exclude(status="draft")
        context["requests"] = Paginator(requests.order_by("-created_at", "-id"), 25).get_page(
            request.GET.get("page")
        )
    return render(request, "org/project_detail.html", context)
