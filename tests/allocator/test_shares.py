"""The share decision (allocator/shares/decision.py): validation, locking + audit, warnings, and the
allocations a cut would have compute ops reclaim."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from allocator.models import DivisionShare
from allocator.shares import balance, division_share_set, pool_forecasts, reclaim_lists
from audit.models import AuditEvent
from tests import factories
from tests.factories import in_days


def share_events():
    return AuditEvent.objects.filter(object_type="allocator.divisionshare")


@pytest.fixture
def research_share(research, pool):
    return factories.DivisionShareFactory(division=research, pool=pool, gpus=40)


def test_executive_sets_share_audited_once(executive, research, pool, research_share):
    # when
    result = division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=30)
    # then
    research_share.refresh_from_db()
    assert research_share.gpus == 30
    assert research_share.updated_by == executive
    assert result.changed and (result.before, result.after) == (40, 30)
    event = share_events().get()
    assert event.actor == executive
    assert event.action == "share.update"
    assert event.object_id == research_share.pk
    assert event.before["gpus"] == 40 and event.after["gpus"] == 30


def test_share_row_created_when_missing(executive, applications, pool):
    # when
    division_share_set(actor=executive, division_id=applications.pk, pool_id=pool.pk, gpus=12)
    # then
    assert DivisionShare.objects.get(division=applications, pool=pool).gpus == 12
    assert share_events().get().before["gpus"] == 0


def test_same_value_is_not_a_change(executive, research, pool, research_share):
    result = division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=40)
    assert not result.changed
    assert not share_events().exists()


@pytest.mark.parametrize("persona", ["requester", "division_lead", "ops", "admin_user"])
def test_only_executives_set_shares(request, persona, research, pool, research_share):
    user = request.getfixturevalue(persona)
    with pytest.raises(PermissionDenied):
        division_share_set(actor=user, division_id=research.pk, pool_id=pool.pk, gpus=1)
    research_share.refresh_from_db()
    assert research_share.gpus == 40
    assert not share_events().exists()


@pytest.mark.parametrize(
    "gpus", [-1, 65, 10**12, "abc", "1.5", "", "<script>alert(1)</script>", True, None]
)
def test_bad_share_refused_nothing_changes(executive, research, pool, research_share, gpus):
    # pool capacity is 64: 65 is out of range
    with pytest.raises(ValidationError) as err:
        division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=gpus)
    assert "gpus" in err.value.message_dict
    research_share.refresh_from_db()
    assert research_share.gpus == 40
    assert not share_events().exists()


def test_share_up_to_future_max_capacity_allowed(executive, research, pool, research_share):
    # given 64 GPUs now and 64 more arriving in 30 days
    factories.CapacityChangeFactory(pool=pool, delta=64, effective_at=in_days(30))
    # when
    result = division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=128)
    # then: allowed, but above the capacity *now*: a warning
    assert result.after == 128
    assert result.overcommitted
    assert any("more than its capacity of 64" in w for w in result.warnings)


@pytest.mark.parametrize("field", ["division", "pool"])
def test_unknown_ids_refused(executive, research, pool, research_share, field):
    kwargs = {"division_id": research.pk, "pool_id": pool.pk, field + "_id": 999_999}
    with pytest.raises(ValidationError) as err:
        division_share_set(actor=executive, gpus=1, **kwargs)
    assert field in err.value.message_dict
    assert not share_events().exists()


def test_sum_above_capacity_warns_but_is_allowed(executive, research, applications, pool):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=40)
    result = division_share_set(
        actor=executive, division_id=applications.pk, pool_id=pool.pk, gpus=30
    )
    assert result.shares_total == 70
    assert result.overcommitted
    assert DivisionShare.objects.get(division=applications, pool=pool).gpus == 30


def test_sum_within_capacity_no_warning(executive, research, applications, pool):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=40)
    result = division_share_set(
        actor=executive, division_id=applications.pk, pool_id=pool.pk, gpus=24
    )
    assert not result.overcommitted
    assert result.warnings == []


@pytest.fixture
def research_holdings(pool, team, other_team):
    """Research holds 8 + 16 + 4 (now) and 12 later; Applications holds 20 (not Research's)."""
    p1 = factories.ProjectFactory(team=team, name="Atlas")
    p2 = factories.ProjectFactory(team=team, name="Beacon")
    small = factories.AllocationFactory(
        pool=pool, project=p1, gpus=8, start=in_days(-1), end=in_days(20)
    )
    big = factories.AllocationFactory(
        pool=pool, project=p2, gpus=16, start=in_days(-1), end=in_days(10)
    )
    tiny = factories.AllocationFactory(
        pool=pool, project=p1, gpus=4, start=in_days(-2), end=in_days(40)
    )
    later = factories.AllocationFactory(
        pool=pool, project=p2, gpus=12, start=in_days(5), end=in_days(60)
    )
    other = factories.AllocationFactory(
        pool=pool,
        project=factories.ProjectFactory(team=other_team),
        gpus=20,
        start=in_days(-1),
        end=in_days(30),
    )
    # ended and released allocations are never reclaim candidates
    factories.AllocationFactory(
        pool=pool, project=p1, gpus=30, start=in_days(-10), end=in_days(-5), state="ended"
    )
    return {"small": small, "big": big, "tiny": tiny, "later": later, "other": other}


def test_cut_below_holding_flags_reclaim_candidates(
    executive, research, pool, research_share, research_holdings
):
    # given Research peaks at 8 + 16 + 4 + 12 = 40 on day 5
    h = research_holdings
    # when its share is cut to 20: 20 GPUs too many
    result = division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=20)
    # then allowed, and the largest allocations cover the 20: big (16) then later (12)
    assert result.after == 20
    assert result.row.peak == 40
    assert result.row.excess == 20
    assert [r.id for r in result.row.reclaim] == [h["big"].pk, h["later"].pk]
    warning = next(w for w in result.warnings if "reclaim" in w)
    # named by project and team, never by the internal allocation number
    named = f"{h['big'].project.name} ({h['big'].project.team.name})"
    assert f"{named}: 16 GPUs until" in warning and ": 12 GPUs until" in warning
    assert ": 20 GPUs until" not in warning and "allocation #" not in warning
    assert share_events().count() == 1


def test_cut_ties_broken_by_latest_end(executive, research, pool, team):
    # given two equal allocations, one ending later
    early = factories.AllocationFactory(pool=pool, gpus=8, end=in_days(5), project__team=team)
    late = factories.AllocationFactory(pool=pool, gpus=8, end=in_days(25), project__team=team)
    # when
    forecast = pool_forecasts([pool])[pool.pk]
    key = (pool.pk, research.pk)
    chosen = reclaim_lists({key: 3}, origin=forecast.origin, until=forecast.until)[key]
    # then the later-ending one goes first, and one is enough
    assert [r.id for r in chosen] == [late.pk]
    assert early.pk not in [r.id for r in chosen]


def test_cut_within_holding_is_not_flagged(
    executive, research, pool, research_share, research_holdings
):
    result = division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=40)
    assert not result.row.over
    assert result.row.reclaim == []


def test_balance_rows(research, applications, pool, research_share, research_holdings):
    # when
    (pb,) = balance()
    rows = {r.division.pk: r for r in pb.rows}
    # then
    assert rows[research.pk].share == 40
    assert rows[research.pk].share_percent == 62  # 40 of 64
    assert rows[research.pk].held_now == 28
    assert rows[research.pk].peak == 40
    assert not rows[research.pk].over
    assert rows[applications.pk].share == 0
    assert rows[applications.pk].held_now == 20
    assert rows[applications.pk].over
    assert [r.id for r in rows[applications.pk].reclaim] == [research_holdings["other"].pk]


def test_forecasts_two_queries_whatever_the_pool_count(django_assert_num_queries, team):
    for n in range(5):
        pool = factories.PoolFactory(capacity=64)
        factories.AllocationFactory(pool=pool, project__team=team, gpus=n + 1)
    pools = list(factories.PoolFactory._meta.model.objects.all())
    with django_assert_num_queries(2):
        forecasts = pool_forecasts(pools)
    assert sorted(f.held_now for f in forecasts.values()) == [1, 2, 3, 4, 5]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("existing", [True, False])
def test_concurrent_edits_chain_in_the_audit_trail(existing):
    """Two executives edit the same share at once: the row lock makes one wait for the other,
    so each audit row's `before` is what the other wrote — no lost update, no gap."""
    import threading

    from django.db import connection

    from org.models import RoleGrant

    # given
    division = factories.DivisionFactory()
    pool = factories.PoolFactory(capacity=64)
    if existing:
        factories.DivisionShareFactory(division=division, pool=pool, gpus=40)
    execs = [factories.UserFactory() for _ in range(2)]
    for user in execs:
        factories.RoleGrantFactory(user=user, role=RoleGrant.Role.EXECUTIVE)
    barrier = threading.Barrier(2)
    failures = []

    def edit(user, gpus):
        try:
            barrier.wait()
            division_share_set(actor=user, division_id=division.pk, pool_id=pool.pk, gpus=gpus)
        except Exception as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    # when
    threads = [
        threading.Thread(target=edit, args=(execs[0], 10)),
        threading.Thread(target=edit, args=(execs[1], 20)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then
    assert failures == []
    events = list(share_events().order_by("id"))
    assert len(events) == 2
    first, second = events
    assert first.before["gpus"] == (40 if existing else 0)
    assert second.before["gpus"] == first.after["gpus"]
    assert DivisionShare.objects.get(division=division, pool=pool).gpus == second.after["gpus"]


@pytest.mark.parametrize("state", ["released", "reclaimed"])
def test_released_and_reclaimed_allocations_hold_nothing(
    research, pool, research_share, team, state
):
    # given a future allocation that was given back before it started, and one that holds
    factories.AllocationFactory(
        pool=pool, project__team=team, gpus=30, start=in_days(5), state=state
    )
    factories.AllocationFactory(pool=pool, project__team=team, gpus=8)
    # when the balance page reads the pool's future
    (pb,) = balance()
    row = next(r for r in pb.rows if r.division.pk == research.pk)
    # then only the holding allocation counts
    assert row.peak == 8
    assert pool_forecasts([pool])[pool.pk].held_now == 8
