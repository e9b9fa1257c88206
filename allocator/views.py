"""Pool pages, the ops console and the release button. Views parse input, call one service and
render; the services hold the rules (allocator/services/)."""

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from common.listing import keyset_page
from org.roles import roles_of
from org.visibility import can_see_project

from . import selectors, services
from .forms import CapacityChangeForm, ReleaseForm, add_service_errors
from .models import Allocation, AllocationChange, CapacityChange, Pool


@login_required
def pool_list(request):
    # Queries: session, user, roles (2), pools, capacity, allocated, waiting.
    return render(request, "allocator/pool_list.html", {"pools": selectors.pools_status()})


@login_required
def pool_detail(request, pk):
    from .scheduled import scheduled_reclaims_for_pool

    pool = get_object_or_404(Pool, pk=pk)
    now = timezone.now()
    queue = list(selectors.waiting_queue(pool.pk))
    for position, change in enumerate(queue, start=1):
        change.position = position
        change.visible = can_see_project(request.user, change.project)
    # "earlier / later" from a cursor on (start, id): no COUNT(*) (docs/performance.md).
    allocations = keyset_page(
        selectors.holding_allocations()
        .filter(pool=pool, end__gt=now)
        .select_related("project__team")
        # GPU-hours measured by the pool's scheduler connector (allocator.connectors rows, by
        # their related name: the domain never imports a connector).
        .prefetch_related("usage_days"),
        ordering=("start", "id"),
        cursor=request.GET.get("cursor"),
        size=50,
    )
    for allocation in allocations:
        allocation.visible = can_see_project(request.user, allocation.project)
        days = list(allocation.usage_days.all())
        allocation.gpu_hours_used = sum(d.gpu_hours for d in days) if days else None
        held_hours = (min(now, allocation.end) - allocation.start).total_seconds() / 3600
        allocation.gpu_hours_allocated = max(0.0, held_hours) * allocation.gpus
    capacity_changes = (
        CapacityChange.objects.filter(pool=pool)
        .filter(Q(effective_at__gte=now - timedelta(days=365)))
        .select_related("created_by")
        .order_by("-effective_at", "-id")[:50]
    )
    return render(
        request,
        "allocator/pool_detail.html",
        {
            "pool": pool,
            "status": selectors.pools_status([pool])[0],
            "chart": selectors.pool_chart(pool.pk, user=request.user),
            "queue": queue,
            "page": allocations,
            "capacity_changes": capacity_changes,
            "scheduled": scheduled_reclaims_for_pool(pool.pk, user=request.user),
            "is_ops": roles_of(request.user).is_compute_ops,
        },
    )


def _require_ops(request):
    if not roles_of(request.user).is_compute_ops:
        raise Http404


def _ops_context(request=None, **forms):
    from .forecast import reclaim_suggestions
    from .scheduled import scheduled_reclaims
    from .signals import request_ids_for_changes

    failed = list(
        AllocationChange.objects.filter(status=AllocationChange.Status.FAILED)
        .select_related("pool", "project")
        .order_by("-id")[:100]
    )
    # Named by the request people know; the change id stays internal (issue 14).
    requests = request_ids_for_changes([c.pk for c in failed])
    for change in failed:
        change.request_id = requests.get(change.pk)

    from notifications.models import Email

    undelivered = Email.objects.filter(state=Email.State.FAILED).order_by("-created_at")
    return {
        "ending": selectors.projects_ending_soon(days=30),
        "failed": failed,
        "emails_failed": undelivered[:20],
        "emails_failed_count": undelivered.count(),
        "capacity_form": forms.get("capacity_form") or CapacityChangeForm(),
        "suggestions": reclaim_suggestions(),
        "scheduled": scheduled_reclaims(),
        "pools": selectors.pools_status(),
        "settings_notice": settings.ALLOTMENT["RECLAIM_NOTICE_HOURS"],
    }


@login_required
def ops_console(request):
    _require_ops(request)
    return render(request, "allocator/ops.html", _ops_context(request))


def _ops_invalid(request, **forms):
    return render(request, "allocator/ops.html", _ops_context(**forms), status=400)


@login_required
@require_POST
def ops_capacity(request):
    _require_ops(request)
    form = CapacityChangeForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            change = services.capacity_change_create(
                pool_id=data["pool"].pk,
                kind=data["kind"],
                delta=data["delta"],
                effective_at=data["effective_at"],
                note=data["note"],
                actor=request.user,
            )
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            messages.success(request, f"Recorded: {change}.")
            return redirect("allocator:ops")
    return _ops_invalid(request, capacity_form=form)


@login_required
@require_POST
def ops_retry(request, change_id):
    _require_ops(request)
    try:
        services.allocation_change_retry(change_id=change_id, actor=request.user)
    except AllocationChange.DoesNotExist as missing:
        raise Http404 from missing
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("allocator:ops")
    messages.success(request, f"{_change_words(change_id)} sent to the apply engine again.")
    return redirect("allocator:ops")


def _change_words(change_id: int) -> str:
    """A change as people know it: "Request #12 (Atlas, 8 GPUs of a100)"."""
    from .signals import request_ids_for_changes

    change = AllocationChange.objects.select_related("pool", "project").get(pk=change_id)
    request_id = request_ids_for_changes([change_id]).get(change_id)
    what = f"{change.project.name}, {change.gpus} × {change.pool.name}"
    return f"Request #{request_id} ({what})" if request_id else f"The change for {what}"


@login_required
def allocation_release(request, pk):
    """GET: the confirmation page (all, some GPUs, or an earlier end); POST: release. A POST
    without a choice releases everything (the page's default)."""
    try:
        allocation = selectors.allocation_get_for_user(request.user, pk)
    except Allocation.DoesNotExist as missing:
        raise Http404 from missing
    if not roles_of(request.user).member_of(allocation.project.team_id):
        raise PermissionDenied("Only members of the project's team can release its GPUs.")
    label = services.allocation_words(allocation)
    if request.method == "POST":
        form = ReleaseForm(request.POST if request.POST.get("how") else {"how": "all"})
        if form.is_valid():
            data = form.cleaned_data
            how = data["how"]
            try:
                services.allocation_release(
                    allocation_id=allocation.pk,
                    actor=request.user,
                    gpus=data["gpus"] if how == "gpus" else None,
                    end=data["end"] if how == "end" else None,
                )
            except ValidationError as error:
                if not hasattr(error, "error_dict"):
                    messages.error(request, " ".join(error.messages))
                    return redirect("org:project-detail", allocation.project_id)
                add_service_errors(form, error)
            else:
                messages.success(request, _released_words(how, data, label))
                return redirect("org:project-detail", allocation.project_id)
        status = 400
    else:
        form = ReleaseForm()
        status = 200
    return render(
        request,
        "allocator/release_confirm.html",
        {"allocation": allocation, "label": label, "form": form},
        status=status,
    )


def _released_words(how: str, data: dict, label: str) -> str:
    if how == "gpus":
        return f"{data['gpus']} GPUs given back from {label}; they are free now."
    if how == "end":
        return f"{label} now ends {data['end']:%Y-%m-%d %H:%M} UTC."
    return f"Released {label}; its GPUs are free."


@login_required
def balance(request):
    if not roles_of(request.user).is_executive:
        raise Http404
    return render(request, "allocator/balance.html", {})
