"""Reclaim suggestions for compute ops (issue 8): for a waiting urgent or high-priority request,
the least-harm reclaims that let it start by the end of the notice period — winding-down
projects first, then the nearest end, then the lowest priority; suggestions only."""

from datetime import UTC, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from allocator import forecast, services
from allocator.connectors.models import AllocationUsage
from allocator.connectors.usage import idle_usage_for
from allocator.models import Reclaim
from allocator.signals import allocation_usage_requested
from tests import factories
from tests.factories import in_days


def _scene(make_change, pool, team):
    active = factories.ProjectFactory(team=team, name="Busy", state="active")
    winding = factories.ProjectFactory(team=team, name="Sunset", state="winding_down")
    a = factories.AllocationFactory(pool=pool, project=active, gpus=32, end=in_days(60))
    w = factories.AllocationFactory(pool=pool, project=winding, gpus=32, end=in_days(60))
    change = make_change(gpus=16, start=in_days(1), end=in_days(20), priority=3)
    services.allocation_change_apply(change_id=change.pk)
    return a, w, change


def test_suggests_the_least_harm_reclaim(make_change, pool, team):
    # given a full pool: an active project and a winding-down one hold 32 each
    _active, winding, change = _scene(make_change, pool, team)
    # when suggestions are made
    [s] = forecast.reclaim_suggestions()
    # then only the winding-down one is asked, and only for the 16 GPUs missing
    assert s.change_id == change.pk
    assert [(st.allocation_id, st.keep) for st in s.steps] == [(winding.pk, 16)]
    assert "winding down" in s.steps[0].why
    # and not before the notice period is over
    notice = timedelta(hours=72)
    assert s.start_by >= timezone.now() + notice - timedelta(minutes=1)


def test_normal_priority_gets_no_suggestion(make_change, pool, team):
    factories.AllocationFactory(pool=pool, gpus=64, end=in_days(60))
    change = make_change(gpus=16, start=in_days(1), end=in_days(20), priority=1)
    services.allocation_change_apply(change_id=change.pk)
    assert forecast.reclaim_suggestions() == []


def test_ops_console_shows_suggestions_and_links_the_move(
    client, ops, make_change, pool, team, requester
):
    _, winding, change = _scene(make_change, pool, team)
    req = factories.ComputeRequestFactory(
        project=change.project, pool=pool, requester=requester, change=change, status="waiting"
    )
    client.force_login(ops)
    page = client.get(reverse("allocator:ops")).content.decode()
    assert "Reclaim suggestions" in page and "Sunset" in page
    assert f"allocation #{winding.pk}" not in page and "change #" not in page
    url = reverse("allocator:ops-move") + f"?to={req.pk}&take-{winding.pk}=16"
    assert url.replace("&", "&amp;") in page
    page = client.get(url).content.decode()
    assert f'name="take-{winding.pk}" value="16"' in page
    assert not Reclaim.objects.exists()  # nothing happens until ops confirm


def test_suggestions_are_for_ops_only(client, requester):
    client.force_login(requester)
    assert client.get(reverse("allocator:ops")).status_code == 404


# --- allocations the cluster measured idle rank first -------------------------------------------


def _midnight_utc():
    return timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _idle_scene(make_change, pool, team, *, used_yesterday: float, used_today: float = 0.0):
    """The full pool of _scene, with Busy (active) measured by the cluster's accounting."""
    active = factories.ProjectFactory(team=team, name="Busy", state="active")
    winding = factories.ProjectFactory(team=team, name="Sunset", state="winding_down")
    busy = factories.AllocationFactory(
        pool=pool, project=active, gpus=32, start=in_days(-3), end=in_days(60)
    )
    sunset = factories.AllocationFactory(
        pool=pool, project=winding, gpus=32, start=in_days(-3), end=in_days(60)
    )
    today = _midnight_utc().date()
    for day, hours in ((today - timedelta(days=1), used_yesterday), (today, used_today)):
        AllocationUsage.objects.create(
            allocation=busy, day=day, gpu_hours=hours, measured_at=timezone.now()
        )
    change = make_change(gpus=16, start=in_days(1), end=in_days(20), priority=3)
    services.allocation_change_apply(change_id=change.pk)
    return busy, sunset, change


def test_an_allocation_measured_idle_ranks_first(make_change, pool, team):
    # given Busy's 32 GPUs ran 72 GPU-hours of the 768 they could over the last 24 hours
    busy, _sunset, change = _idle_scene(make_change, pool, team, used_yesterday=72)
    # when suggestions are made at midnight (UTC), a whole day after the measured one began
    [s] = forecast.reclaim_suggestions(now=_midnight_utc())
    # then the idle allocation is asked first — ahead of the winding-down project — and says why
    assert s.change_id == change.pk
    assert [(st.allocation_id, st.keep) for st in s.steps] == [(busy.pk, 16)]
    assert s.steps[0].why.startswith("used 3 of 32 GPUs over the last 24 hours")


def test_an_allocation_using_its_gpus_keeps_todays_order(make_change, pool, team):
    # given Busy ran half its GPU-hours (384 of 768): not idle
    _busy, sunset, _change = _idle_scene(make_change, pool, team, used_yesterday=384)
    [s] = forecast.reclaim_suggestions(now=_midnight_utc())
    assert [(st.allocation_id, st.keep) for st in s.steps] == [(sunset.pk, 16)]
    assert "used" not in s.steps[0].why


@pytest.fixture
def no_usage_answer():
    """As if the connectors app were not installed: nobody answers the usage question."""
    assert allocation_usage_requested.disconnect(dispatch_uid="connectors-idle-usage")
    yield
    allocation_usage_requested.connect(idle_usage_for, dispatch_uid="connectors-idle-usage")


def test_with_no_connector_answering_the_order_is_as_before(
    make_change, pool, team, no_usage_answer, django_assert_num_queries
):
    # given Busy measured idle, but no connector answering the question
    _busy, sunset, _change = _idle_scene(make_change, pool, team, used_yesterday=0)
    # when suggestions are made: four queries, and the winding-down project goes first as ever
    with django_assert_num_queries(4):
        [s] = forecast.reclaim_suggestions(now=_midnight_utc())
    assert [(st.allocation_id, st.keep) for st in s.steps] == [(sunset.pk, 16)]


def test_asking_about_idle_use_costs_two_queries_for_any_number(
    make_change, pool, team, django_assert_num_queries
):
    # given idle allocations in two pools, each with an urgent request waiting
    west = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=16)
    _idle_scene(make_change, pool, team, used_yesterday=0)
    today = _midnight_utc().date()
    for _ in range(3):
        a = factories.AllocationFactory(pool=west, gpus=4, start=in_days(-3), end=in_days(60))
        AllocationUsage.objects.create(
            allocation=a, day=today - timedelta(days=1), gpu_hours=0, measured_at=timezone.now()
        )
    services.allocation_change_apply(
        change_id=make_change(pool=west, gpus=8, start=in_days(1), end=in_days(20), priority=3).pk
    )
    # then the suggestions take the four queries plus two for the usage read-back
    with django_assert_num_queries(6):
        suggestions = forecast.reclaim_suggestions(now=_midnight_utc())
    assert len(suggestions) == 2
    assert all(st.why.startswith("used 0 of") for s in suggestions for st in s.steps)


def test_ops_console_says_why_an_idle_allocation_is_first(client, ops, make_change, pool, team):
    busy, _sunset, _change = _idle_scene(make_change, pool, team, used_yesterday=0)
    client.force_login(ops)
    page = client.get(reverse("allocator:ops")).content.decode()
    # named by its project, never by an internal id
    assert "project Busy (32 GPUs; used 0 of 32 GPUs over the last 24 hours" in page
    assert f"allocation #{busy.pk}" not in page
