"""Compute ops' guided actions: move GPUs (choose the sources, the destination by its request
number or the pool, preview the effect, confirm), wind a project down, and the scheduled
reclaims they can still change or cancel. Nobody types an internal id: rows are picked, and
requests are named by the number people see. Works without JavaScript (plain forms, a
preview step before anything happens)."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Case, IntegerField, Q, Value, When
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from org.models import Project
from org.roles import roles_of

from . import selectors, services
from .forms import ReclaimChangeForm, WindDownForm
from .models import MAX_NOTICE_HOURS, Allocation, AllocationChange, Reclaim
from .signals import request_ids_for_changes

MAX_SOURCES = 100


def _require_ops(request):
    if not roles_of(request.user).is_compute_ops:
        raise Http404


@dataclass
class Destination:
    request_id: int
    change: AllocationChange
    position: int | None

    @property
    def label(self) -> str:
        c = self.change
        where = f"waiting, {self.position} in the queue" if self.position else "approved"
        return f"Request #{self.request_id} · {c.project} · {c.gpus} × {c.pool} ({where})"


def destinations() -> list[Destination]:
    """Approved requests that can still take GPUs (pending or waiting), by request number."""
    changes = list(
        AllocationChange.objects.filter(
            status__in=[AllocationChange.Status.PENDING, AllocationChange.Status.WAITING]
        )
        .select_related("pool", "project")
        .order_by("pool_id", "-priority", "approved_at", "id")[:500]
    )
    request_ids = request_ids_for_changes([c.pk for c in changes])
    positions = selectors.queue_positions([c.pk for c in changes if c.status == "waiting"])
    return [
        Destination(request_ids[c.pk], c, positions.get(c.pk))
        for c in changes
        if c.pk in request_ids
    ]


def _destination(raw: str | None, options: list[Destination]) -> Destination | None:
    """The destination a request number names, or None for the pool."""
    if not raw or raw == "pool":
        return None
    for option in options:
        if str(option.request_id) == raw:
            return option
    raise ValidationError({"to": ["Choose a waiting or approved request from the list."]})


def move_sources(*, q: str = "", pool_id: int | None = None):
    """Allocations holding GPUs now or later, winding-down projects first, then those whose
    project ends soonest, then the nearest allocation end."""
    now = timezone.now()
    soon = (now + timedelta(days=30)).date()
    rows = (
        selectors.holding_allocations()
        .filter(end__gt=now)
        .select_related("pool", "project__team__division")
        .annotate(
            rank=Case(
                When(project__state__in=["winding_down", "ended"], then=Value(0)),
                When(project__expected_end__lte=soon, then=Value(1)),
                default=Value(2),
                output_field=IntegerField(),
            )
        )
        .order_by("rank", "end", "id")
    )
    if pool_id:
        rows = rows.filter(pool_id=pool_id)
    for word in q.split()[:5]:
        rows = rows.filter(
            Q(project__name__icontains=word)
            | Q(project__team__name__icontains=word)
            | Q(pool__cluster__icontains=word)
            | Q(pool__gpu_model__icontains=word)
        )
    return rows


def _parse_move(post, options):
    """The move form's values, and its errors in words."""
    errors: list[str] = []
    takes: dict[int, int] = {}
    for key, value in post.items():
        if not key.startswith("take-") or not value.strip():
            continue
        try:
            allocation_id, gpus = int(key[5:]), int(value)
        except ValueError:
            errors.append("GPUs to take must be whole numbers.")
            continue
        if gpus < 0:
            errors.append("GPUs to take cannot be negative.")
        elif gpus:
            takes[allocation_id] = gpus
    if not takes and not errors:
        errors.append("Choose at least one allocation: enter the GPUs to take from it.")
    notice_raw = (post.get("notice_hours") or "").strip()
    notice = None
    if notice_raw:
        try:
            notice = int(notice_raw)
        except ValueError:
            errors.append("Notice: enter a whole number of hours.")
        else:
            if not 0 <= notice <= MAX_NOTICE_HOURS:
                errors.append(f"Notice: enter a number from 0 to {MAX_NOTICE_HOURS} hours.")
    reason = (post.get("reason") or "").strip()
    if not reason:
        errors.append("Reason: say why, the owners read it.")
    elif len(reason) > 2000:
        errors.append("Reason: at most 2,000 characters.")
    destination = None
    try:
        destination = _destination(post.get("to"), options)
    except ValidationError as error:
        errors.extend(error.messages)
    return takes, notice, reason, destination, errors


@login_required
def ops_move(request):
    """GET: choose; POST: preview (nothing happens) or, with `confirm`, move."""
    _require_ops(request)
    options = destinations()
    source = request.POST if request.method == "POST" else request.GET
    q = (source.get("q") or "").strip()[:100]
    errors: list[str] = []
    try:
        destination = _destination(source.get("to"), options)
    except ValidationError as error:
        destination, errors = None, list(error.messages)
    pool_id = destination.change.pool_id if destination else None
    sources = list(move_sources(q=q, pool_id=pool_id)[:MAX_SOURCES])
    context = {
        "destinations": options,
        "destination": destination,
        "to": source.get("to") or "pool",
        "q": q,
        "sources": sources,
        "more_sources": len(sources) == MAX_SOURCES,
        "default_notice": settings.ALLOTMENT["RECLAIM_NOTICE_HOURS"],
        "notice_hours": source.get("notice_hours", ""),
        "reason": source.get("reason", ""),
        "takes": {k[5:]: v for k, v in source.items() if k.startswith("take-")},
        "errors": errors,
    }
    if request.method != "POST":
        return render(request, "allocator/move.html", context)

    takes, notice, reason, destination, errors = _parse_move(request.POST, options)
    context["errors"] = errors
    if errors:
        return render(request, "allocator/move.html", context, status=400)
    if "confirm" not in request.POST:
        context["preview"] = _preview(takes, notice, destination)
        if context["preview"]["errors"]:
            context["errors"] = context["preview"]["errors"]
            return render(request, "allocator/move.html", context, status=400)
        return render(request, "allocator/move.html", context)
    try:
        reclaims = services.gpus_move(
            actor=request.user,
            takes=takes,
            to_change_id=destination.change.pk if destination else None,
            reason=reason,
            notice_hours=notice,
        )
    except ValidationError as error:
        context["errors"] = error.messages
        return render(request, "allocator/move.html", context, status=400)
    moved = sum(takes.values())
    when = reclaims[0].effective_at
    where = (
        f"request #{destination.request_id} of {destination.change.project}"
        if destination
        else "the pool"
    )
    messages.success(
        request,
        f"{moved} GPUs move to {where} "
        f"{'now' if when <= timezone.now() else 'at ' + services.records.fmt(when)}; "
        "the owners were told.",
    )
    return redirect("allocator:ops")


def _preview(takes, notice, destination):
    """What the move would do, on both sides and on the queue. Reads only."""
    now = timezone.now()
    hours = settings.ALLOTMENT["RECLAIM_NOTICE_HOURS"] if notice is None else notice
    effective_at = now + timedelta(hours=hours)
    rows = {
        a.pk: a
        for a in selectors.holding_allocations()
        .filter(pk__in=takes)
        .select_related("pool", "project__team")
    }
    errors = []
    sides = []
    for allocation_id, take in takes.items():
        a = rows.get(allocation_id)
        if a is None or a.end <= now:
            errors.append("An allocation you chose no longer holds GPUs.")
            continue
        if take > a.gpus:
            errors.append(f"{services.allocation_words(a)} holds only {a.gpus} GPUs.")
        if destination and a.pool_id != destination.change.pool_id:
            errors.append(
                f"{services.allocation_words(a)} is not in {destination.change.pool}, the pool"
                " of the request."
            )
        if a.end <= effective_at:
            errors.append(f"{services.allocation_words(a)} ends before the notice is over.")
        sides.append({"allocation": a, "take": take, "keeps": max(a.gpus - take, 0)})
    moved = sum(takes.values())
    queue = []
    pools = {s["allocation"].pool_id: s["allocation"].pool for s in sides}
    for pool_id, pool in pools.items():
        waiting = list(selectors.waiting_queue(pool_id))
        queue.append({"pool": pool, "count": len(waiting), "gpus": sum(c.gpus for c in waiting)})
    effect = None
    if destination:
        change = destination.change
        effect = {
            "covers": moved >= change.gpus,
            "short": max(change.gpus - moved, 0),
        }
    return {
        "sides": sides,
        "moved": moved,
        "effective_at": effective_at,
        "destination_effect": effect,
        "queue": queue,
        "errors": errors,
    }


# --- scheduled reclaims: change or cancel until they take effect ---


@login_required
@require_POST
def reclaim_cancel(request, pk):
    _require_ops(request)
    try:
        services.reclaim_cancel(
            reclaim_id=pk, actor=request.user, reason=request.POST.get("reason", "")
        )
    except Reclaim.DoesNotExist as missing:
        raise Http404 from missing
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, "Reclaim cancelled; the owners were told.")
    return redirect(_back(request))


@login_required
def reclaim_edit(request, pk):
    _require_ops(request)
    reclaim = get_object_or_404(
        Reclaim.objects.select_related("allocation__pool", "allocation__project"), pk=pk
    )
    allocation = reclaim.allocation
    if request.method == "POST":
        form = ReclaimChangeForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.reclaim_change(
                    reclaim_id=reclaim.pk,
                    actor=request.user,
                    new_gpus=data["new_gpus"],
                    new_end=data["new_end"],
                    notice_hours=data["notice_hours"],
                    reason=data["reason"],
                )
            except ValidationError as error:
                from .forms import add_service_errors

                add_service_errors(form, error)
            else:
                messages.success(request, "Reclaim changed; the owners got the new notice.")
                return redirect("allocator:ops")
        status = 400
    else:
        hours = max(0, int((reclaim.effective_at - timezone.now()).total_seconds() // 3600))
        form = ReclaimChangeForm(
            initial={
                "new_gpus": reclaim.new_gpus,
                "new_end": reclaim.new_end,
                "notice_hours": hours,
                "reason": reclaim.reason,
            }
        )
        status = 200
    return render(
        request,
        "allocator/reclaim_edit.html",
        {
            "reclaim": reclaim,
            "allocation": allocation,
            "label": services.allocation_words(allocation),
            "effect": services.reclaim_effect_words(reclaim, allocation),
            "form": form,
            "editable": reclaim.status == Reclaim.Status.SCHEDULED,
        },
        status=status,
    )


def _back(request) -> str:
    back = request.POST.get("next", "")
    return back if back.startswith("/") and not back.startswith("//") else "/ops/"


# --- winding a project down ---


@login_required
def project_wind_down(request, pk):
    _require_ops(request)
    project = get_object_or_404(Project.objects.select_related("team"), pk=pk)
    held = list(
        Allocation.objects.filter(
            project=project, state=Allocation.State.ACTIVE, end__gt=timezone.now()
        ).select_related("pool")
    )
    form = WindDownForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            reclaims = services.project_wind_down(
                project_id=project.pk,
                actor=request.user,
                reason=data["reason"],
                notice_hours=data["notice_hours"],
                at_expected_end=data["when"] == "expected_end",
            )
        except ValidationError as error:
            from .forms import add_service_errors

            add_service_errors(form, error)
        else:
            messages.success(
                request,
                f"{project}: {len(reclaims)} allocations are reclaimed from "
                f"{services.records.fmt(reclaims[0].effective_at)}; the team was told once.",
            )
            return redirect("org:project-detail", project.pk)
    return render(
        request,
        "allocator/wind_down.html",
        {"project": project, "held": held, "form": form},
        status=400 if form.errors else 200,
    )
