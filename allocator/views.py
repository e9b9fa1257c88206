"""Pool pages, the ops console and the release button. Views parse input, call one service and
render; the services hold the rules (allocator/services/)."""

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from org.roles import roles_of
from org.visibility import can_see_project

from . import selectors, services
from .forms import (
    CapacityChangeForm,
    ReclaimForm,
    ReleaseForm,
    TransferForm,
    add_service_errors,
)
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
    allocations = Paginator(
        selectors.holding_allocations()
        .filter(pool=pool, end__gt=now)
        .select_related("project__team")
        # GPU-hours measured by the pool's scheduler connector (allocator.connectors rows, by
        # their related name: the domain never imports a connector).
        .prefetch_related("usage_days")
        .order_by("start", "id"),
        50,
    ).get_page(request.GET.get("page"))
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


def _prefill(request) -> TransferForm | None:
    """A suggestion's link pre-fills the transfer form (GET, nothing happens until ops submit)."""
    if request is None or "transfer-allocation" not in request.GET:
        return None
    keys = ("allocation", "new_gpus", "to_change", "reason")
    return TransferForm(initial={k: request.GET.get(f"transfer-{k}", "") for k in keys})


def _ops_context(request=None, **forms):
    from .forecast import reclaim_suggestions
    from .scheduled import scheduled_reclaims

    failed = (
        AllocationChange.objects.filter(status=AllocationChange.Status.FAILED)
        .select_related("pool", "project")
        .order_by("-id")[:100]
    )
    from notifications.models import Email

    undelivered = Email.objects.filter(state=Email.State.FAILED).order_by("-created_at")
    return {
        "ending": selectors.projects_ending_soon(days=30),
        "failed": failed,
        "emails_failed": undelivered[:20],
        "emails_failed_count": undelivered.count(),
        "capacity_form": forms.get("capacity_form") or CapacityChangeForm(),
        "reclaim_form": forms.get("reclaim_form") or ReclaimForm(),
        "transfer_form": forms.get("transfer_form") or _prefill(request) or TransferForm(),
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


def _reclaim_or_transfer(request, form_class, key):
    _require_ops(request)
    form = form_class(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            allocation = selectors.allocation_get_for_user(request.user, data["allocation"])
            reclaim = services.allocation_reclaim(
                allocation_id=allocation.pk,
                actor=request.user,
                new_gpus=data["new_gpus"],
                new_end=data["new_end"],
                reason=data["reason"],
                notice_hours=data["notice_hours"],
                transfer_to_id=data.get("to_change"),
            )
        except Allocation.DoesNotExist:
            form.add_error("allocation", "Unknown allocation.")
        except ValidationError as error:
            add_service_errors(form, error, {"transfer_to": "to_change"})
        else:
            messages.success(
                request,
                f"Reclaim {'applied' if reclaim.status == 'applied' else 'scheduled'}: "
                f"{services.allocation_words(allocation)}, "
                f"{services.reclaim_effect_words(reclaim, allocation)}; the owners were told.",
            )
            return redirect("allocator:ops")
    return _ops_invalid(request, **{key: form})


@login_required
@require_POST
def ops_reclaim(request):
    return _reclaim_or_transfer(request, ReclaimForm, "reclaim_form")


@login_required
@require_POST
def ops_transfer(request):
    return _reclaim_or_transfer(request, TransferForm, "transfer_form")


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
    messages.success(request, f"Change #{change_id} sent to the apply engine again.")
    return redirect("allocator:ops")


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
