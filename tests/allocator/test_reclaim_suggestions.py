"""Reclaim suggestions for compute ops (issue 8): for a waiting urgent or high-priority request,
the least-harm reclaims that let it start by the end of the notice period — winding-down
projects first, then the nearest end, then the lowest priority; suggestions only."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from allocator import forecast, services
from allocator.models import Reclaim
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
