"""Reads on compute requests, always scoped to the user who asks (policies.can_view in SQL), with
a bounded number of queries whatever the number of rows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import django_filters
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone
from django_filters.widgets import BooleanWidget

from allocator.models import Allocation, CapacityChange, DivisionShare, Pool
from allocator.timeline import Span, Timeline
from audit.models import AuditEvent
from org.models import Division, Team
from org.roles import roles_of

from .models import ApprovalStep, ComputeRequest
from .workflow import Stage, Status


def _base() -> QuerySet[ComputeRequest]:
    return ComputeRequest.objects.select_related(
        "project__team__division", "pool", "requester", "change"
    )


def visibility_q(user) -> Q | None:
    """policies.can_view as a filter; None means nothing is visible."""
    roles = roles_of(user)
    if not roles.authenticated:
        return None
    on_team = Q(project__team_id__in=roles.team_ids)
    if roles.is_executive or roles.is_compute_ops:
        cleared = Q()
    else:
        cleared = (
            Q(project__confidential=False)
            | on_team
            | Q(project__team__division_id__in=roles.lead_division_ids)
        )
    return on_team | (~Q(status=Status.DRAFT) & cleared)


def requests_visible_to(user) -> QuerySet[ComputeRequest]:
    q = visibility_q(user)
    if q is None:
        return ComputeRequest.objects.none()
    return _base().filter(q)


def with_steps(qs: QuerySet[ComputeRequest]) -> QuerySet[ComputeRequest]:
    return qs.prefetch_related(
        Prefetch("steps", queryset=ApprovalStep.objects.select_related("decider"))
    )


def request_get_for_user(user, request_id) -> ComputeRequest:
    """The request if `user` may see it; 404 otherwise (its existence is not revealed)."""
    try:
        request_id = int(request_id)
    except (TypeError, ValueError):
        raise Http404("No such request.") from None
    req = with_steps(requests_visible_to(user)).filter(pk=request_id).first()
    if req is None:
        raise Http404("No such request.")
    return req


def request_audit_events(req: ComputeRequest) -> QuerySet[AuditEvent]:
    return (
        AuditEvent.objects.filter(object_type=req._meta.label_lower, object_id=req.pk)
        .select_related("actor")
        .order_by("at", "id")
    )


def queue_positions_for(requests) -> dict[int, int]:
    """request id -> 1-based place in its pool's waiting queue, for the waiting ones (one query)."""
    change_ids = {r.change_id: r.pk for r in requests if r.status == Status.WAITING and r.change_id}
    if not change_ids:
        return {}
    from allocator.selectors import queue_positions

    positions = queue_positions(list(change_ids))
    return {change_ids[cid]: pos for cid, pos in positions.items() if cid in change_ids}


# --- Filters shared by the list page and the API ---


class RequestFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Status.choices, label="State")
    division = django_filters.ModelChoiceFilter(
        field_name="project__team__division", queryset=Division.objects.all(), label="Division"
    )
    team = django_filters.ModelChoiceFilter(
        field_name="project__team",
        queryset=Team.objects.select_related("division"),
        label="Team",
    )
    pool = django_filters.ModelChoiceFilter(queryset=Pool.objects.all(), label="Pool")
    mine = django_filters.BooleanFilter(
        method="filter_mine", label="Filed by me", widget=BooleanWidget
    )
    q = django_filters.CharFilter(method="filter_search", label="Search")

    class Meta:
        model = ComputeRequest
        fields = ["status", "division", "team", "pool", "mine", "q"]

    def filter_mine(self, queryset, name, value):
        if value and self.request is not None:
            return queryset.filter(requester=self.request.user)
        return queryset

    def filter_search(self, queryset, name, value):
        value = value.strip()[:200]
        if not value:
            return queryset
        match = (
            Q(project__name__icontains=value)
            | Q(goal__icontains=value)
            | Q(expected_outcome__icontains=value)
            | Q(requester__username__icontains=value)
        )
        if value.lstrip("#").isdigit():
            match |= Q(pk=int(value.lstrip("#")))
        return queryset.filter(match)


# --- Approvals inbox ---


def inbox_for(user) -> QuerySet[ComputeRequest]:
    """Requests waiting for a stage `user` may decide (policies.can_decide in SQL), oldest first.
    `waiting_since` is when the current stage began."""
    roles = roles_of(user)
    stages = Q(pk__in=[])
    if roles.lead_division_ids:
        stages |= Q(
            status=Status.PENDING_DIVISION,
            project__team__division_id__in=roles.lead_division_ids,
        )
    if roles.is_executive:
        decided_division = ApprovalStep.objects.filter(
            request=OuterRef("pk"), round=OuterRef("round"), decider=user
        ).exclude(stage=Stage.EXECUTIVE)
        stages |= Q(status=Status.PENDING_EXECUTIVE) & ~Q(Exists(decided_division))
    last_step = (
        ApprovalStep.objects.filter(request=OuterRef("pk"), round=OuterRef("round"))
        .order_by("-decided_at")
        .values("decided_at")[:1]
    )
    return (
        _base()
        .filter(stages)
        .exclude(requester=user)
        .annotate(waiting_since=Coalesce(Subquery(last_step), "submitted_at"))
        .order_by("waiting_since", "id")
    )


@dataclass(frozen=True)
class ShareEffect:
    division: str
    pool: str
    share: int
    capacity: int  # the pool's capacity at the instant of the peak
    peak_now: int  # the division's peak holding over the request's range, without it
    peak_after: int  # ... and with it

    @staticmethod
    def _pct(part: int, whole: int) -> int | None:
        return round(100 * part / whole) if whole > 0 else None

    @property
    def share_percent(self):
        return self._pct(self.share, self.capacity)

    @property
    def now_percent(self):
        return self._pct(self.peak_now, self.capacity)

    @property
    def after_percent(self):
        return self._pct(self.peak_after, self.capacity)

    @property
    def exceeds(self) -> bool:
        return self.peak_after > self.share


def share_effects(requests, *, now: datetime | None = None) -> dict[int, ShareEffect]:
    """What approving each request would do to its division's holding of its pool, in three
    queries for any number of requests (the same rule as allocator.selectors.share_check)."""
    requests = list(requests)
    if not requests:
        return {}
    now = now or timezone.now()
    pool_ids = {r.pool_id for r in requests}
    division_ids = {r.project.team.division_id for r in requests}
    origin = min([now, *(r.start for r in requests)])
    changes = defaultdict(list)
    for pool_id, at, delta in CapacityChange.objects.filter(pool_id__in=pool_ids).values_list(
        "pool_id", "effective_at", "delta"
    ):
        changes[pool_id].append((at, delta))
    spans = defaultdict(list)
    for pool_id, division_id, start, end, gpus in Allocation.objects.filter(
        pool_id__in=pool_ids, end__gt=origin, project__team__division_id__in=division_ids
    ).values_list("pool_id", "project__team__division_id", "start", "end", "gpus"):
        spans[pool_id, division_id].append(Span(start, end, gpus))
    shares = {
        (p, d): g
        for p, d, g in DivisionShare.objects.filter(
            pool_id__in=pool_ids, division_id__in=division_ids
        ).values_list("pool_id", "division_id", "gpus")
    }
    effects = {}
    for r in requests:
        division = r.project.team.division
        key = (r.pool_id, division.pk)
        start = min(r.start, now)
        timeline = Timeline(start, changes[r.pool_id], spans[key])
        peak = max(timeline.window(r.start, r.end), key=lambda s: s.held)
        effects[r.pk] = ShareEffect(
            division=division.name,
            pool=r.pool.name,
            share=shares.get(key, 0),
            capacity=peak.capacity,
            peak_now=peak.held,
            peak_after=peak.held + r.gpus,
        )
    return effects
