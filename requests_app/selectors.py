"""Reads on compute requests, always scoped to the user who asks (policies.can_view in SQL), with
a bounded number of queries whatever the number of rows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, cast

import django_filters
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone
from django_filters.widgets import BooleanWidget

from accounts.delegations import acting_for
from allocator.models import Allocation, DivisionShare, Pool
from allocator.waiting import LateStart
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


@dataclass(frozen=True)
class ShareEffect:
    division: str
    pool: str
    share: int
    capacity: int  # the pool's capacity at the instant of the peak
    peak_now: int  # the division's peak holding over the request's range, without it
    peak_after: int  # ... and with it
    peak_at: datetime | None = None  # the instant of the peak: the percentages are of its capacity

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

    @property
    def words(self) -> str:
        """The effect in words, every percentage of the capacity at the instant it is about:
        "On 3 Dec 2026 09:00 UTC, when west/H200 has 768 GPUs, Research holds 364 (47%) against
        a share of 300 (39%); after approving, 664 (86%)"."""
        from allocator.waiting import when

        def pct(n):
            p = self._pct(n, self.capacity)
            return f" ({p}%)" if p is not None else ""

        at = f"On {when(self.peak_at)}, its peak, when" if self.peak_at else "At its peak, when"
        return (
            f"{at} {self.pool} has {self.capacity} GPUs, {self.division} holds {self.peak_now}"
            f"{pct(self.peak_now)} against a share of {self.share}{pct(self.share)}; after "
            f"approving, {self.peak_after}{pct(self.peak_after)}"
        )


class _DivisionHeld(NamedTuple):
    pool_id: int
    division_id: int
    start: datetime
    end: datetime
    gpus: int


def share_effects(requests, *, now: datetime | None = None) -> dict[int, ShareEffect]:
    """What approving each request would do to its division's holding of its pool, in three
    queries for any number of requests. The rule is allocator.selectors.share_check_on — the one
    the engine applies — over the same holdings (allocations that hold GPUs: not released or
    reclaimed ones)."""
    from allocator.loaders import holding_allocations, load_pool_rows
    from allocator.selectors import share_check_on

    requests = list(requests)
    if not requests:
        return {}
    now = now or timezone.now()
    pool_ids = {r.pool_id for r in requests}
    division_ids = {r.project.team.division_id for r in requests}
    origin = min([now, *(r.start for r in requests)])
    rows = load_pool_rows(
        pool_ids,
        origin=origin,
        holdings=holding_allocations().filter(project__team__division_id__in=division_ids),
        fields=("pool_id", "project__team__division_id", "start", "end", "gpus"),
        row=_DivisionHeld,
    )
    held: dict[tuple[int, int], list[_DivisionHeld]] = defaultdict(list)
    for pool_rows in rows.held.values():
        for h in pool_rows:
            held[h.pool_id, h.division_id].append(h)
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
        timeline = rows.timeline(r.pool_id, min(r.start, now), held[key])
        check = share_check_on(
            timeline,
            division_id=division.pk,
            share=shares.get(key, 0),
            gpus=r.gpus,
            start=r.start,
            end=r.end,
        )
        effects[r.pk] = ShareEffect(
            division=division.name,
            pool=r.pool.name,
            share=check.share,
            capacity=check.capacity_at_peak,
            peak_now=check.peak_after - r.gpus,
            peak_after=check.peak_after,
            peak_at=max(check.peak_at, r.start),
        )
    return effects


# --- Forecast: when will it be served? ---


@dataclass(frozen=True)
class RequestForecast:
    start: datetime | None  # the expected start of its allocation, or None
    reason: str  # in words, with the event that makes it fit or why it will not
    outcome: str  # "allocated", "review", "failed" or "scheduled" (allocated, starts later)
    late: LateStart | None = None  # a fixed start served late runs only to its end

    assumptions = "Assumes no new approvals and no early releases."

    @property
    def days_served(self) -> float | None:
        return _days(self.late.served) if self.late is not None else None

    @property
    def days_asked(self) -> float | None:
        return _days(self.late.asked) if self.late is not None else None

    @property
    def late_words(self) -> str:
        from allocator.waiting import late_start_words

        return late_start_words(self.late) if self.late is not None else ""


def _days(d: timedelta) -> float:
    return round(d.total_seconds() / 86400, 1)


def _sentence(text: str) -> str:
    """A whole sentence: capitalised, with its full stop."""
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else f"{text}."


def _forecast_words(o) -> tuple[datetime | None, str]:
    from allocator.forecast import when
    from allocator.waiting import late_start_words

    if o.kind == "allocated":
        words = [f"Expected to start {when(o.start)}, {o.reason}."]
        if o.late is not None:
            words.append(f"Served then, it {late_start_words(o.late)}.")
    elif o.kind == "review":
        words = [f"Expected to be {o.reason}."]
    else:
        words = [_sentence(o.reason)]
    words.append(getattr(o, "detail", ""))  # outcomes cached before the field have none
    return (o.start if o.kind == "allocated" else None), " ".join(w for w in words if w)


def forecasts_for(requests, *, now: datetime | None = None) -> dict[int, RequestForecast]:
    """request id -> its forecast, for the approved ones not yet holding their GPUs: waiting or
    approved (from the pool's forecast, allocator/forecast/, cached per pool version), and
    allocated ones whose allocation starts later. A bounded number of queries for any number of
    requests: pool versions, then for pools not in the cache the forecast's own six."""
    from allocator.forecast import outcomes_for_pools, when

    now = now or timezone.now()
    live = [
        r
        for r in requests
        if r.change_id and r.status in (Status.WAITING, Status.APPROVED) and r.change is not None
    ]
    result: dict[int, RequestForecast] = {}
    if live:
        outcomes = outcomes_for_pools({r.pool_id for r in live}, now=now)
        for r in live:
            o = outcomes.get(r.pool_id, {}).get(r.change_id)
            if o is None:
                continue
            start, words = _forecast_words(o)
            result[r.pk] = RequestForecast(
                start=start, reason=words, outcome=o.kind, late=getattr(o, "late", None)
            )
    allocated = [
        r
        for r in requests
        if r.status == Status.ALLOCATED and r.change_id and r.change.allocation_id is not None
    ]
    if allocated:
        starts = dict(
            Allocation.objects.filter(
                pk__in=[r.change.allocation_id for r in allocated], start__gt=now
            ).values_list("pk", "start")
        )
        for r in allocated:
            start = starts.get(r.change.allocation_id)
            if start is not None:
                result[r.pk] = RequestForecast(
                    start=start,
                    reason=f"Allocated: its GPUs are held for it from {when(start)}.",
                    outcome="scheduled",
                )
    return result


# --- Impact preview: what approving would do ---


@dataclass(frozen=True)
class Delay:
    request_id: int | None  # None when the viewer may not see it
    label: str
    before: datetime | None  # its forecast start without the request
    after: datetime | None  # ... and with it (None: no longer served within the horizon)

    @property
    def by(self):
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    @property
    def by_words(self) -> str:
        """ "by 3 days", or "beyond the horizon" when it would no longer be served."""
        from allocator.forecast import duration_words

        by = self.by
        return "beyond the horizon" if by is None else f"by {duration_words(by)}"


@dataclass(frozen=True)
class Competitor:
    """Another request pending review on the same pool, and what becomes of this one if that
    one is approved first."""

    request_id: int
    gpus: int
    sentence: str  # "If #5 (300 GPUs) is approved first, this one waits until …"


@dataclass(frozen=True)
class ApprovalImpact:
    effect: ShareEffect | None
    outcome: str  # "at_once", "later", "waits", "review", "never"
    start: datetime | None
    sentence: str
    delays: list[Delay]
    competitors: list[Competitor] = field(default_factory=list)

    assumptions = "Assumes no new approvals and no early releases."


def _impact_sentence(outcome, now) -> tuple[str, str]:
    from allocator.forecast import when

    if outcome.kind == "allocated" and outcome.decided_at == now:
        if outcome.start <= now + timedelta(minutes=1):
            return "at_once", "It would be allocated at once."
        return "later", f"It would be allocated at once, from {when(outcome.start)}."
    detail = getattr(outcome, "detail", "")  # why it would wait, what would serve it sooner
    if outcome.kind == "allocated":
        from allocator.waiting import late_start_words

        words = [f"It would wait, then start {when(outcome.start)}, {outcome.reason}."]
        if outcome.late is not None:
            words.append(f"Served then, it {late_start_words(outcome.late)}.")
        return "waits", " ".join([*words, detail]).strip()
    if outcome.kind == "review":
        return "review", f"At apply time it would be {outcome.reason}."
    return "never", f"It would wait. {_sentence(outcome.reason)} {detail}".strip()


def _as_change(r, now: datetime):
    """The approved change a request would become (what approving it now adds to the queue)."""
    from allocator import forecast
    from allocator.models import Priority

    division = r.project.team.division
    return forecast.SimChange(
        pk=-r.pk,  # not a change id: changes have positive ids
        priority=int(Priority[r.priority.upper()]),
        approved_at=now,
        kind=r.kind,
        target_allocation_id=r.target_allocation_id,
        gpus=r.gpus,
        start=r.start,
        end=r.end,
        flexible_start=r.flexible_start,
        executive_reviewed=r.needs_executive,
        division_id=division.pk,
        label=forecast.project_label(r.project.name, r.project.confidential),
        status="pending",
        division_name=division.name,
    )


def _impact_key(extra, version: str, pool_id: int) -> str:
    import hashlib

    fields = {k: v for k, v in extra.__dict__.items() if k != "approved_at"}
    digest = hashlib.sha1(f"{version}|{sorted(fields.items())!r}".encode()).hexdigest()
    return f"impact:{pool_id}:{digest}"


def approval_impacts(requests, *, user, now: datetime | None = None) -> dict[int, ApprovalImpact]:
    """For requests awaiting a decision: the division's share before and after (share_effects),
    whether approving now would allocate it at once, from a later date, or leave it waiting —
    and which waiting requests it would delay and by how much. Simulates each request's pool
    without it (once per pool) and with it (allocator/forecast/), both at the same instant.
    Cached per pool version (allocator.forecast.pool_versions: any write the forecast reads
    changes it) and the request as it would be approved, for forecast.CACHE_SECONDS. Queries:
    share effects (3), the pool versions (1), on a cache miss the pools' rows (6), the delayed
    requests visible to the user (2), whatever the number of requests."""
    from django.core.cache import cache

    from allocator import forecast

    requests = [
        r
        for r in requests
        if r.status in (Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE, Status.CHANGES_REQUESTED)
    ]
    if not requests:
        return {}
    now = now or timezone.now()
    effects = share_effects(requests, now=now)
    versions = forecast.pool_versions({r.pool_id for r in requests})
    extras = {r.pk: _as_change(r, now) for r in requests}
    keys = {
        r.pk: _impact_key(extras[r.pk], versions.get(r.pool_id, ""), r.pool_id) for r in requests
    }
    cached = cache.get_many(list(set(keys.values())))
    missing = [r for r in requests if keys[r.pk] not in cached]
    if missing:
        states = forecast.load_pools({r.pool_id for r in missing}, now=now)
        baseline = {pid: forecast.simulate(state, now=now) for pid, state in states.items()}
        fresh = {}
        for r in missing:
            state, extra = states[r.pool_id], extras[r.pk]
            with_it = forecast.simulate(state.with_changes(extra=[extra]), now=now)
            delays = []
            for change_id, o in baseline[r.pool_id].outcomes.items():
                after = with_it.outcomes.get(change_id)
                if o.kind != "allocated" or after is None:
                    continue
                # An allocated outcome always has its start (after's is compared only then).
                o_start, after_start = cast(datetime, o.start), cast(datetime, after.start)
                if after.kind != "allocated" or after_start > o_start:
                    delays.append((change_id, o.start, after.start if after.allocated else None))
            delays.sort(key=lambda d: (d[2] is not None, d[1]))
            delayed = {d[0] for d in delays}
            labels = {c.pk: c.label for c in state.changes if c.pk in delayed}
            outcome = with_it.outcomes[extra.pk]
            kind, sentence = _impact_sentence(outcome, now)
            fresh[keys[r.pk]] = (kind, sentence, outcome.start, delays, labels)
        cache.set_many(fresh, forecast.CACHE_SECONDS)
        cached.update(fresh)
    delayed_changes = {d[0] for key in keys.values() for d in cached[key][3]}
    visible = (
        dict(
            requests_visible_to(user)
            .filter(change_id__in=delayed_changes)
            .values_list("change_id", "pk")
        )
        if delayed_changes
        else {}
    )
    competition = _competition(requests, cached, keys, user=user, now=now)
    result = {}
    for r in requests:
        kind, sentence, start, delays, labels = cached[keys[r.pk]]
        result[r.pk] = ApprovalImpact(
            competitors=competition.get(r.pk, []),
            effect=effects.get(r.pk),
            outcome=kind,
            start=start,
            sentence=sentence,
            delays=[
                Delay(
                    request_id=visible.get(cid),
                    label=labels.get(cid, "a request") if cid in visible else "a request",
                    before=b,
                    after=a,
                )
                for cid, b, a in delays
            ],
        )
    return result


MAX_COMPETITORS = 3  # per request: the preview names the oldest few pending on its pool


def _competition(requests, cached, keys, *, user, now: datetime) -> dict[int, list[Competitor]]:
    """For each request, the other requests pending review on the same pool that the user may
    see (the oldest few), and what becomes of this one if such a request is approved first:
    each is simulated with both approved, the other one first. Cached like the impacts (the
    pool's version, both requests as they would be approved). Queries: the competitors (1),
    and on a cache miss the pools' rows (6)."""
    import hashlib

    from django.core.cache import cache

    from allocator import forecast

    pool_ids = {r.pool_id for r in requests}
    rivals = list(
        requests_visible_to(user)
        .filter(
            pool_id__in=pool_ids,
            status__in=[Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE],
        )
        .select_related("project__team__division")
        .order_by("stage_entered_at", "pk")
    )
    others = {
        r.pk: [c for c in rivals if c.pool_id == r.pool_id and c.pk != r.pk][:MAX_COMPETITORS]
        for r in requests
    }
    others = {pk: cs for pk, cs in others.items() if cs}
    if not others:
        return {}
    ckeys = {}
    for r in requests:
        if r.pk in others:
            rival_keys = "|".join(
                _impact_key(_as_change(c, now), "", c.pool_id) for c in others[r.pk]
            )
            digest = hashlib.sha1(f"{keys[r.pk]}|{rival_keys}".encode()).hexdigest()
            ckeys[r.pk] = f"compete:{digest}"
    found = cache.get_many(list(ckeys.values()))
    missing = [r for r in requests if r.pk in ckeys and ckeys[r.pk] not in found]
    if missing:
        states = forecast.load_pools({r.pool_id for r in missing}, now=now)
        fresh = {
            ckeys[r.pk]: _compete(r, others[r.pk], states[r.pool_id], cached[keys[r.pk]], now)
            for r in missing
        }
        cache.set_many(fresh, forecast.CACHE_SECONDS)
        found.update(fresh)
    return {pk: found[key] for pk, key in ckeys.items()}


def _compete(r, others, state, alone, now: datetime) -> list[Competitor]:
    from allocator import forecast
    from allocator.waiting import late_start_words

    alone_kind, _, alone_start, _, _ = alone
    mine = _as_change(r, now + timedelta(microseconds=1))  # approved just after the other
    result = []
    for c in others:
        with_both = forecast.simulate(state.with_changes(extra=[_as_change(c, now), mine]), now=now)
        o = with_both.outcomes[mine.pk]
        kind, _ = _impact_sentence(o, now)
        if kind == alone_kind and o.start == alone_start:
            continue
        if o.allocated:
            then = f"this one waits until {forecast.when(o.start)}"
            if o.late is not None:
                then += f" and {late_start_words(o.late)}"
        elif o.kind == "review":
            then = "this one goes to executive review at apply time"
        else:
            then = "this one is not served within the horizon"
        result.append(
            Competitor(
                request_id=c.pk,
                gpus=c.gpus,
                sentence=f"If #{c.pk} ({c.gpus} GPUs) is approved first, {then}.",
            )
        )
    return result


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
