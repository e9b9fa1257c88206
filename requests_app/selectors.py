"""Reads on compute requests, always scoped to the user who asks (policies.can_view in SQL), with
a bounded number of queries whatever the number of rows."""

from __future__ import annotations

from datetime import datetime, timedelta

import django_filters
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone
from django_filters.widgets import BooleanWidget

from accounts.delegations import acting_for
from allocator.models import Pool
from audit.models import AuditEvent
from org.models import Division, Team
from org.roles import roles_of
from org.visibility import visible_projects_q

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
    return on_team | (~Q(status=Status.DRAFT) & visible_projects_q(user, "project__"))


def requests_visible_to(user) -> QuerySet[ComputeRequest]:
    q = visibility_q(user)
    if q is None:
        return ComputeRequest.objects.none()
    return _base().filter(q)


def with_steps(qs: QuerySet[ComputeRequest]) -> QuerySet[ComputeRequest]:
    return qs.prefetch_related(
        Prefetch("steps", queryset=ApprovalStep.objects.select_related("decider", "on_behalf_of"))
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


def _decided_division_stage(*people):
    """The request's current-round division step was decided by, or on behalf of, one of
    `people` (separation of duties, as policies.decide_capacity)."""
    return Exists(
        ApprovalStep.objects.filter(request=OuterRef("pk"), round=OuterRef("round"))
        .exclude(stage=Stage.EXECUTIVE)
        .filter(Q(decider__in=people) | Q(on_behalf_of__in=people))
    )


INBOX_SORTS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    # name -> (label, SQL order); "due" is ordered in Python (working days are not SQL).
    "oldest": ("Waiting longest", ("stage_entered_at", "id")),
    "due": ("Due soonest", None),
    "largest": ("Most GPUs", ("-gpus", "stage_entered_at", "id")),
    "smallest": ("Fewest GPUs", ("gpus", "stage_entered_at", "id")),
    "pool": ("Pool", ("pool__cluster", "pool__gpu_model", "stage_entered_at", "id")),
    "division": ("Division", ("project__team__division__name", "stage_entered_at", "id")),
}


def inbox_for(
    user,
    *,
    sort: str = "oldest",
    pool=None,
    division=None,
    min_gpus: int | None = None,
    max_gpus: int | None = None,
) -> QuerySet[ComputeRequest]:
    """Requests waiting for a stage `user` may decide, in their own right or as someone's
    delegate (policies.decide_capacity in SQL), oldest first unless `sort` says otherwise
    (INBOX_SORTS; "due" keeps the SQL order: order it with inbox_by_due). `waiting_since` is
    when the current stage began."""
    roles = roles_of(user)
    stages = Q(pk__in=[])
    if roles.lead_division_ids:
        stages |= Q(
            status=Status.PENDING_DIVISION,
            project__team__division_id__in=roles.lead_division_ids,
        )
    if roles.is_executive:
        stages |= Q(status=Status.PENDING_EXECUTIVE) & ~Q(_decided_division_stage(user.pk))
    # A delegation lends a stage, not the right to see: a delegate decides only the requests
    # they may see (a confidential project's stay with those the confidentiality rule names).
    visible = visibility_q(user) or Q(pk__in=[])
    for acting in acting_for(user):
        not_theirs = ~Q(requester_id=acting.delegator_id) & visible
        if acting.covers_executive_review:
            stages |= (
                Q(status=Status.PENDING_EXECUTIVE)
                & not_theirs
                & ~Q(_decided_division_stage(user.pk, acting.delegator_id))
            )
        else:
            stages |= (
                Q(status=Status.PENDING_DIVISION, project__team__division_id=acting.division_id)
                & not_theirs
            )
    # stage_entered_at is stored by the workflow (index request_stage_age): the first page is read
    # from the index. Requests written outside the workflow without it come last.
    narrowed = Q()
    if pool is not None:
        narrowed &= Q(pool=pool)
    if division is not None:
        narrowed &= Q(project__team__division=division)
    if min_gpus is not None:
        narrowed &= Q(gpus__gte=min_gpus)
    if max_gpus is not None:
        narrowed &= Q(gpus__lte=max_gpus)
    order = INBOX_SORTS.get(sort, INBOX_SORTS["oldest"])[1] or ("stage_entered_at", "id")
    return (
        _base()
        .filter(stages, narrowed)
        .exclude(requester=user)
        .annotate(waiting_since=Coalesce("stage_entered_at", "submitted_at", "created_at"))
        .order_by(*order)
    )


def inbox_by_due(queryset: QuerySet[ComputeRequest]) -> list[int]:
    """The ids of `queryset`, due soonest first. A due time counts working days, which SQL cannot
    order, so one narrow query reads what sla.due_at needs and Python orders the ids; the page
    then loads only its own rows."""
    from .sla import due_at

    rows = queryset.values_list(
        "pk", "status", "priority", "stage_entered_at", "submitted_at", "created_at"
    )
    far = timezone.now() + timedelta(days=36500)

    def due(row) -> tuple[datetime, int]:
        pk, status, priority, stage_entered, submitted, created = row
        entered = stage_entered or submitted or created  # as inbox_for's waiting_since
        stage = Stage.EXECUTIVE if status == Status.PENDING_EXECUTIVE else Stage.DIVISION
        return (due_at(stage, priority, entered) if entered else far, pk)

    return [row[0] for row in sorted(rows, key=due)]


def request_ids_for_changes(sender=None, *, change_ids, **kwargs) -> dict[int, int]:
    """allocator's question (allocator.signals.change_origin_requested): which request made
    each of these changes. Ids only, nothing confidential."""
    return dict(
        ComputeRequest.objects.filter(change_id__in=change_ids).values_list("change_id", "pk")
    )


def change_ids_for_requests(sender=None, *, request_ids, **kwargs) -> dict[int, int]:
    """allocator's question (allocator.signals.change_of_request_requested): which change each
    of these requests made. Ids only."""
    return dict(
        ComputeRequest.objects.filter(pk__in=request_ids, change__isnull=False).values_list(
            "pk", "change_id"
        )
    )
