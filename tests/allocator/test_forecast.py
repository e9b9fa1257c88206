"""The forecast is true (issue 8): record what allocator/forecast/ says of every waiting request,
then move the clock through the same instants with the REAL engine (the periodic services with
now=t, real PostgreSQL) and check that each request starts exactly when, and as, forecast.
Also: running the engine at more instants than the forecast's changes nothing (the forecast's
instants are all the instants where the engine's plan can change)."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocator import forecast, services
from allocator.models import Allocation, AllocationChange, Reclaim
from tests import factories
from tests.factories import in_days

H = timedelta(hours=1)
TICK = timedelta(microseconds=1)


def run_engine(instants):
    """What the periodic tasks do at each instant, with the clock at that instant."""
    for t in sorted(set(instants)):
        services.reclaims_apply_due(now=t)
        services.allocations_expire(now=t)
        services.queues_serve_all(now=t)


def check_forecast_true(pool, *, extra_instants=()):
    """Forecast now; run the engine at the forecast's instants (and any extra ones); compare."""
    now = timezone.now()
    predicted = forecast.forecast_pools([pool.pk], now=now)[pool.pk]
    waiting = list(
        AllocationChange.objects.filter(pool=pool, status="waiting").values_list("pk", flat=True)
    )
    assert set(waiting) <= set(predicted.outcomes)
    run_engine([*predicted.instants, *(t for t in extra_instants if t >= now)])
    changes = AllocationChange.objects.in_bulk(waiting)
    for pk in waiting:
        change, outcome = changes[pk], predicted.outcomes[pk]
        if outcome.kind == "allocated":
            assert change.status == "applied", (pk, outcome, change.status)
            allocation = Allocation.objects.get(pk=change.allocation_id)
            if change.kind != "extension":
                assert allocation.start == outcome.start, (pk, outcome)
            assert allocation.end == outcome.end, (pk, outcome)
            assert change.applied_at == outcome.decided_at, (pk, outcome)
            assert outcome.reason
        elif outcome.kind == "review":
            assert change.status == "needs_review", (pk, outcome, change.status)
        else:
            assert change.status in ("waiting", "failed"), (pk, outcome, change.status)
            assert outcome.reason
    return predicted


@pytest.fixture
def applications_project(applications):
    team = factories.TeamFactory(division=applications, name="Assistant", slug="assistant")
    return factories.ProjectFactory(team=team, name="Helper")


def test_forecast_names_the_event_and_comes_true(
    make_change, pool, project, applications_project, applications, ops
):
    # given a full pool: 40 GPUs until day 5, 24 until day 10; an arrival of 16 on day 8
    factories.DivisionShareFactory(division=applications, pool=pool, gpus=64)
    factories.AllocationFactory(pool=pool, project=project, gpus=40, end=in_days(5))
    held = factories.AllocationFactory(pool=pool, project=project, gpus=24, end=in_days(10))
    factories.CapacityChangeFactory(pool=pool, delta=16, effective_at=in_days(8))
    # and a queue: 40 GPUs from day 1 (freed on day 5), 16 from day 2 for 10 days (only
    # after the arrival... which is day 8, inside its period: waits for day 10 end), a flexible
    # one, and a lower priority one behind them
    first = make_change(gpus=40, start=in_days(1), end=in_days(20), priority=2)
    second = make_change(
        gpus=16, start=in_days(2), end=in_days(30), project=applications_project, priority=1
    )
    flexible = make_change(gpus=24, start=in_days(3), end=in_days(6), flexible_start=True)
    low = make_change(gpus=8, start=in_days(1), end=in_days(4), priority=0)
    for change in (first, second, flexible, low):
        services.allocation_change_apply(change_id=change.pk)
    # and a reclaim of 8 of the 24 GPUs, effective after the notice period
    services.allocation_reclaim(
        allocation_id=held.pk, actor=ops, new_gpus=16, reason="Make room.", notice_hours=24 * 6
    )
    # the flexible one is allocated at once from day 5, when the 40 GPUs end: the first request
    # cannot be placed on record now (nothing is free on day 1), so it holds nothing (work
    # conservation; this test once had the flexible one wait behind it)
    flexible.refresh_from_db()
    assert flexible.status == "applied"
    assert abs(flexible.allocation.start - in_days(5)) < timedelta(minutes=1)
    assert AllocationChange.objects.filter(status="waiting").count() == 3
    # when the forecast is made and the engine runs at its instants
    predicted = check_forecast_true(pool)
    # then the first request is served on day 8, when those 24 end and the 16 arrive, and says so
    outcome = predicted.outcomes[first.pk]
    assert outcome.kind == "allocated"
    assert abs(outcome.start - in_days(8)) < timedelta(minutes=1)
    assert "project Atlas's 24 GPUs of east/H100 end" in outcome.reason


def test_a_request_served_late_behind_a_waiting_one_is_forecast_on_the_record(
    make_change, pool, project
):
    # given 64 GPUs: 24 held until day 3, 40 until day 8
    factories.AllocationFactory(pool=pool, project=project, gpus=24, end=in_days(3))
    factories.AllocationFactory(pool=pool, project=project, gpus=40, end=in_days(8))
    # and two fixed requests waiting: 48 over days 1-20 (fits from day 8), and behind it 24
    # over days 2-12 (fits from day 3, late, where the 48 cannot be placed on record)
    # (first in the queue, a request the pool can never hold, so the 48 is not at its head)
    never = make_change(gpus=100, start=in_days(1), end=in_days(20), priority=3)
    head = make_change(gpus=48, start=in_days(1), end=in_days(20), priority=2)
    behind = make_change(gpus=24, start=in_days(2), end=in_days(12), priority=1)
    for change in (never, head, behind):
        services.allocation_change_apply(change_id=change.pk)
    # when forecast and the engine runs at its instants
    predicted = check_forecast_true(pool)
    # then the 24 starts on day 3, and the 48 only once they end on day 12 (not on day 8:
    # the 24 are on record by then)
    assert abs(predicted.outcomes[behind.pk].start - in_days(3)) < timedelta(minutes=1)
    assert abs(predicted.outcomes[head.pk].start - in_days(12)) < timedelta(minutes=1)


def test_share_rule_at_apply_time_is_forecast(make_change, pool, project, research_share):
    # given Research may hold 40 GPUs; 40 are held until day 5; a 32-GPU request waits
    research_share.gpus = 40
    research_share.save()
    factories.AllocationFactory(pool=pool, project=project, gpus=40, end=in_days(5))
    factories.AllocationFactory(pool=pool, project=project, gpus=24, end=in_days(3))
    change = make_change(gpus=32, start=in_days(1), end=in_days(9))
    services.allocation_change_apply(change_id=change.pk)
    # when forecast; then: when the 24 end on day 3 it is still short; on day 5 it would fit,
    # but 32 + nothing else ... is within 40, so it is allocated
    predicted = check_forecast_true(pool)
    assert predicted.outcomes[change.pk].kind == "allocated"


def test_over_share_is_forecast_as_executive_review(make_change, pool, project, research_share):
    research_share.gpus = 20
    research_share.save()
    factories.AllocationFactory(pool=pool, project=project, gpus=60, end=in_days(2))
    factories.AllocationFactory(pool=pool, project=project, gpus=4, end=in_days(20))
    change = make_change(gpus=30, start=in_days(1), end=in_days(9))
    services.allocation_change_apply(change_id=change.pk)
    predicted = check_forecast_true(pool)
    outcome = predicted.outcomes[change.pk]
    assert outcome.kind == "review"
    assert "above its" in outcome.reason


def test_never_fitting_request_says_why(make_change, pool, project):
    factories.AllocationFactory(pool=pool, project=project, gpus=60, end=in_days(40))
    change = make_change(gpus=30, start=in_days(1), end=in_days(9))
    services.allocation_change_apply(change_id=change.pk)
    predicted = check_forecast_true(pool)
    outcome = predicted.outcomes[change.pk]
    assert outcome.kind == "failed" and outcome.start is None
    assert "4 of the 30 GPUs" in outcome.reason


# --- generated scenarios --------------------------------------------------------------------


def _example():
    """A savepoint per generated example, rolled back at its end. Marked like Django's TestCase
    marks its own atomic blocks, so the engine's durable transactions may run inside it."""
    block = transaction.atomic()
    block._from_testcase = True
    return block


change_spec = st.tuples(
    st.integers(1, 24),  # gpus
    st.integers(0, 96),  # start, hours from now
    st.integers(1, 96),  # duration, hours
    st.integers(0, 3),  # priority
    st.booleans(),  # flexible start
    st.booleans(),  # executive reviewed
    st.booleans(),  # division: Research or Applications
)


@pytest.mark.django_db
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    capacity=st.integers(8, 32),
    arrival=st.one_of(st.none(), st.tuples(st.integers(1, 120), st.integers(1, 16))),
    specs=st.lists(change_spec, min_size=2, max_size=9),
    shares=st.tuples(st.integers(0, 32), st.integers(0, 32)),
    reclaim=st.one_of(st.none(), st.tuples(st.integers(0, 8), st.integers(1, 48))),
    extra=st.lists(st.integers(1, 24 * 95), max_size=4),
)
def test_generated_scenarios_come_true(
    capacity, arrival, specs, shares, reclaim, extra, research, applications, ops
):
    with _example():
        pool = factories.PoolFactory(capacity=capacity)
        teams = [
            factories.TeamFactory(division=research),
            factories.TeamFactory(division=applications),
        ]
        projects = [factories.ProjectFactory(team=t) for t in teams]
        for division, gpus in zip((research, applications), shares, strict=True):
            factories.DivisionShareFactory(division=division, pool=pool, gpus=gpus)
        if arrival is not None:
            factories.CapacityChangeFactory(
                pool=pool, delta=arrival[1], effective_at=in_days(0) + arrival[0] * H
            )
        base = in_days(0)
        for i, (gpus, start, hours, priority, flexible, reviewed, applications_side) in enumerate(
            specs
        ):
            change = factories.AllocationChangeFactory(
                pool=pool,
                project=projects[int(applications_side)],
                gpus=gpus,
                start=base + start * H,
                end=base + (start + hours) * H,
                priority=priority,
                flexible_start=flexible,
                executive_reviewed=reviewed,
                approved_at=base - (len(specs) - i) * H,
            )
            services.allocation_change_apply(change_id=change.pk)
        if reclaim is not None:
            victim = (
                Allocation.objects.filter(pool=pool, state="active", end__gt=base + 60 * H)
                .order_by("pk")
                .first()
            )
            if victim is not None:
                services.allocation_reclaim(
                    allocation_id=victim.pk,
                    actor=ops,
                    new_gpus=min(reclaim[0], victim.gpus - 1),
                    reason="generated",
                    notice_hours=reclaim[1],
                )
        check_forecast_true(pool, extra_instants=[base + h * H for h in extra])
        assert Reclaim.objects.filter(allocation__pool=pool, status="scheduled").count() <= 1
        transaction.set_rollback(True)


def test_rows_read_with_the_c_loader_are_the_orm_rows(make_change, pool, project):
    # given allocations and waiting changes with timestamps to the microsecond
    factories.AllocationFactory(pool=pool, project=project, gpus=8, end=in_days(3) + 7 * TICK)
    make_change(gpus=4, start=in_days(1) + 3 * TICK, end=in_days(2))
    for qs in (
        Allocation.objects.values_list("id", "start", "end", "gpus"),
        AllocationChange.objects.values_list("id", "approved_at", "start", "end", "status"),
    ):
        # when read by the forecast's loader and by the ORM
        fast, orm = forecast.read_rows(qs.order_by("id")), list(qs.order_by("id"))
        # then the rows are equal, down to the time zone object
        assert fast == orm and fast
        assert [type(v) for v in fast[0]] == [type(v) for v in orm[0]]
        assert fast[0][1].tzinfo is orm[0][1].tzinfo
