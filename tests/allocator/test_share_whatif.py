"""What-if shares on the balance page (issue 8): executives try candidate shares (GET, nothing
saved) and see each division's holding against them, the allocations standing above them, and
which waiting requests would start earlier or later (the share rule at apply time decides who
goes to executive review)."""

import pytest
from django.core.cache import cache
from django.urls import reverse

from allocator import services
from allocator.models import DivisionShare
from tests import factories
from tests.factories import in_days


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()


@pytest.fixture
def scene(make_change, pool, project, research_share):
    """Research holds 40 of 64 GPUs until day 5; 32 more wait from day 1 (start day 5)."""
    held = factories.AllocationFactory(pool=pool, project=project, gpus=40, end=in_days(5))
    change = make_change(gpus=32, start=in_days(1), end=in_days(20))
    services.allocation_change_apply(change_id=change.pk)
    return held, change


def _try(client, pool, division, gpus):
    url = reverse("allocator:balance")
    return client.get(url, {"whatif": pool.pk, f"share-{division.pk}": gpus})


def test_lower_share_sends_the_waiting_request_to_review(client, executive, pool, research, scene):
    held, _ = scene
    client.force_login(executive)
    # when Research's share of 30 is tried
    response = _try(client, pool, research, "30")
    text = response.content.decode()
    # then: over by 10 now, the 40-GPU allocation is listed, the waiting one would go to review
    assert response.status_code == 200
    assert "With these shares" in text and "over by 10" in text
    assert f"{held.project.name} ({held.project.team.name})" in text
    assert "an approved change without a request" in text
    assert "sent to executive review at apply time" in text
    # named by project and team (and request number, when a request made it), never by the
    # internal allocation or change numbers
    assert "allocation #" not in text and "change #" not in text
    # and nothing was saved
    assert DivisionShare.objects.get(division=research, pool=pool).gpus == 64


def test_same_shares_move_no_one(client, executive, pool, research, scene):
    client.force_login(executive)
    text = _try(client, pool, research, "64").content.decode()
    assert "No waiting request would start earlier or later." in text


@pytest.mark.parametrize("bad", ["abc", "-3", "1.5", "9999999999999"])
def test_bad_input_is_an_inline_error(client, executive, pool, research, scene, bad):
    client.force_login(executive)
    response = _try(client, pool, research, bad)
    text = response.content.decode()
    assert response.status_code == 200
    assert 'role="alert"' in text and "With these shares" not in text


def test_only_executives_may_try(client, division_lead, pool, research, scene):
    client.force_login(division_lead)
    assert _try(client, pool, research, "30").status_code == 404


def test_whatif_warns_when_the_tried_shares_exceed_the_pool(
    client, executive, pool, research, applications, scene
):
    # given a 64-GPU pool; when shares of 60 and 40 are tried
    client.force_login(executive)
    response = client.get(
        reverse("allocator:balance"),
        {"whatif": pool.pk, f"share-{research.pk}": "60", f"share-{applications.pk}": "40"},
    )
    text = response.content.decode()
    # then the page warns as saving does, and nothing is saved
    assert "add up to 100 GPUs, more than its capacity of 64" in text
    assert not DivisionShare.objects.filter(division=applications).exists()
    # and shares that fit give no warning
    response = client.get(
        reverse("allocator:balance"),
        {"whatif": pool.pk, f"share-{research.pk}": "30", f"share-{applications.pk}": "30"},
    )
    assert "more than its capacity" not in response.content.decode()
