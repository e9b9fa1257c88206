"""Pool pages, the ops console and the release button: permissions, inline errors, bounded
queries."""

import pytest
from django.urls import reverse

from allocator.models import Allocation, AllocationChange, CapacityChange
from tests import factories
from tests.factories import in_days


@pytest.fixture
def busy_pool(pool, project, other_team):
    """A pool with a few allocations (one of a confidential project) and a waiting queue."""
    secret = factories.ProjectFactory(team=other_team, name="Skunkworks", confidential=True)
    for i in range(3):
        factories.AllocationFactory(pool=pool, project=project, gpus=8, start=in_days(i - 1))
    factories.AllocationFactory(pool=pool, project=secret, gpus=8)
    for i in range(3):
        factories.AllocationChangeFactory(pool=pool, project=project, status="waiting", gpus=4 + i)
    factories.AllocationChangeFactory(pool=pool, project=secret, status="waiting")
    return pool


def _login(client, user):
    client.force_login(user)
    return client


def test_pool_list_shows_status_in_bounded_queries(
    client, requester, busy_pool, django_assert_max_num_queries
):
    for _ in range(5):
        factories.PoolFactory(capacity=32)
    _login(client, requester)
    # session, user, roles (2), unread count, pools, capacity, allocated, waiting
    with django_assert_max_num_queries(10):
        response = client.get(reverse("allocator:pool-list"))
    assert response.status_code == 200
    assert b"east/H100" in response.content


def test_pool_page_shows_timeline_queue_and_capacity(
    client, requester, busy_pool, django_assert_max_num_queries
):
    _login(client, requester)
    # 16, plus the scheduled reclaims drawn on the timeline and the ones listed: 18
    with django_assert_max_num_queries(18):
        response = client.get(reverse("allocator:pool-detail", args=[busy_pool.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in body and "Atlas · 8" in body
    assert "Waiting queue" in body and "Capacity changes" in body
    # the confidential project's name is hidden from an outsider to it
    assert "Skunkworks" not in body and "Confidential project" in body
    assert 'style="' not in body and "<script>" not in body


def test_pool_page_queries_do_not_grow_with_rows(
    client, requester, busy_pool, project, django_assert_max_num_queries
):
    for _ in range(20):
        factories.AllocationFactory(pool=busy_pool, project=project, gpus=1)
        factories.AllocationChangeFactory(pool=busy_pool, project=project, status="waiting")
    _login(client, requester)
    # 16, plus the scheduled reclaims drawn on the timeline and the ones listed: 18
    with django_assert_max_num_queries(18):
        assert client.get(reverse("allocator:pool-detail", args=[busy_pool.pk])).status_code == 200


def test_pool_page_shows_confidential_name_to_its_team(client, outsider, busy_pool):
    _login(client, outsider)
    body = client.get(reverse("allocator:pool-detail", args=[busy_pool.pk])).content.decode()
    assert "Skunkworks" in body


def test_unknown_pool_is_404(client, requester):
    _login(client, requester)
    assert client.get(reverse("allocator:pool-detail", args=[987654])).status_code == 404


def test_pages_need_sign_in(client, pool):
    response = client.get(reverse("allocator:pool-list"))
    assert response.status_code == 302


# --- ops console ---


@pytest.mark.parametrize("persona", ["requester", "division_lead", "executive", "admin_user"])
def test_ops_console_is_404_for_non_ops(client, persona, request):
    _login(client, request.getfixturevalue(persona))
    assert client.get(reverse("allocator:ops")).status_code == 404
    for name in [
        "allocator:ops-capacity",
        "allocator:ops-move",
    ]:
        assert client.post(reverse(name), {}).status_code == 404
    assert client.post(reverse("allocator:ops-retry", args=[1])).status_code == 404


def test_ops_console_lists_ending_projects_and_failed_applies(
    client, ops, pool, team, django_assert_max_num_queries
):
    ending = factories.ProjectFactory(team=team, name="Sunset", expected_end=in_days(10).date())
    factories.AllocationFactory(pool=pool, project=ending, gpus=12)
    later = factories.ProjectFactory(team=team, name="Evergreen", expected_end=in_days(90).date())
    factories.AllocationFactory(pool=pool, project=later, gpus=4)
    failed = factories.AllocationChangeFactory(
        pool=pool, project=later, status="failed", last_error="boom"
    )
    req = factories.ComputeRequestFactory(project=later, pool=pool, change=failed)
    _login(client, ops)
    # 16: the page as before (15), and the count of undelivered emails (none: no list read)
    with django_assert_max_num_queries(16):
        response = client.get(reverse("allocator:ops"))
    body = response.content.decode()
    assert "Sunset" in body and "Evergreen" not in body.split("Failed applies")[0]
    # the failed apply is named by its request, the change id stays internal
    assert f"Request #{req.pk}" in body.split("Failed applies")[1] and "boom" in body
    assert reverse("allocator:ops-retry", args=[failed.pk]) in body


def test_ops_retry_button(client, ops, pool, project, monkeypatch):
    from allocator import tasks

    monkeypatch.setattr(tasks.apply_change, "delay", lambda cid: None)
    change = factories.AllocationChangeFactory(pool=pool, project=project, status="failed")
    _login(client, ops)
    response = client.post(reverse("allocator:ops-retry", args=[change.pk]))
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.status == "pending"
    assert client.post(reverse("allocator:ops-retry", args=[987654])).status_code == 404


def test_ops_capacity_form_records_arrival(client, ops, pool):
    _login(client, ops)
    response = client.post(
        reverse("allocator:ops-capacity"),
        {
            "capacity-pool": pool.pk,
            "capacity-kind": "arrival",
            "capacity-delta": 32,
            "capacity-effective_at": in_days(5).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert response.status_code == 302
    assert CapacityChange.objects.filter(pool=pool, delta=32).exists()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"capacity-delta": 0}, "changes nothing"),
        ({"capacity-delta": -5}, "positive"),
        ({"capacity-delta": "ten"}, "whole number"),
        ({"capacity-delta": 10**9}, "less than or equal"),
        ({"capacity-effective_at": "not a date"}, "valid date"),
        ({"capacity-pool": 987654}, "valid choice"),
        ({"capacity-pool": "x"}, "valid choice"),
        ({"capacity-note": "x" * 501}, "at most 500 characters"),
        ({"capacity-kind": "decommission", "capacity-delta": -64}, "Allocations in the way"),
    ],
)
def test_ops_capacity_form_inline_errors(client, ops, pool, project, data, error):
    factories.AllocationFactory(pool=pool, project=project, gpus=8)
    _login(client, ops)
    form = {
        "capacity-pool": pool.pk,
        "capacity-kind": "arrival",
        "capacity-delta": 8,
        "capacity-effective_at": in_days(1).strftime("%Y-%m-%dT%H:%M"),
    }
    form.update(data)
    response = client.post(reverse("allocator:ops-capacity"), form)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert CapacityChange.objects.filter(pool=pool).count() == 1


def test_ops_transfer_by_typed_number_is_gone_from_the_console(client, ops, pool, project):
    # the console offers the guided move instead of a form that asks for internal numbers
    _login(client, ops)
    page = client.get(reverse("allocator:ops")).content.decode()
    assert reverse("allocator:ops-move") in page and "change #" not in page


# --- release button ---


def test_team_member_releases_from_the_project_page(client, requester, pool, project, research):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=8)
    _login(client, requester)
    page = client.get(reverse("org:project-detail", args=[project.pk])).content.decode()
    url = reverse("allocator:allocation-release", args=[allocation.pk])
    assert url in page
    response = client.post(url)
    assert response.status_code == 302
    allocation.refresh_from_db()
    assert allocation.state == "released"
    # a second click says so instead of failing
    client.post(url)
    allocation.refresh_from_db()
    assert allocation.state == "released"


def test_release_by_non_member_is_403_and_changes_nothing(client, outsider, pool, project):
    allocation = factories.AllocationFactory(pool=pool, project=project)
    _login(client, outsider)
    assert (
        client.post(reverse("allocator:allocation-release", args=[allocation.pk])).status_code
        == 403
    )
    allocation.refresh_from_db()
    assert allocation.state == "active"


def test_release_of_hidden_or_unknown_allocation_is_404(client, outsider, pool, team):
    secret = factories.ProjectFactory(team=team, confidential=True)
    allocation = factories.AllocationFactory(pool=pool, project=secret)
    _login(client, outsider)
    assert (
        client.post(reverse("allocator:allocation-release", args=[allocation.pk])).status_code
        == 404
    )
    assert client.post(reverse("allocator:allocation-release", args=[987654])).status_code == 404
    assert client.get(
        reverse("allocator:allocation-release", args=[allocation.pk])
    ).status_code in (404, 405)
    assert Allocation.objects.get(pk=allocation.pk).state == "active"
    assert not AllocationChange.objects.exists()


def test_ops_page_after_a_refused_decrease_marks_the_ops_console(client, ops, pool, project):
    # given an allocation in the way of a decrease
    factories.AllocationFactory(pool=pool, project=project, gpus=8)
    _login(client, ops)

    # when compute ops records a decrease that is refused (the form comes back from /ops/capacity/)
    response = client.post(
        reverse("allocator:ops-capacity"),
        {
            "capacity-pool": pool.pk,
            "capacity-kind": "decommission",
            "capacity-delta": -64,
            "capacity-effective_at": in_days(1).strftime("%Y-%m-%dT%H:%M"),
        },
    )

    # then the navigation marks the ops console, not the pools
    body = response.content.decode()
    assert response.status_code == 400 and "Allocations in the way" in body
    assert 'aria-current="page">Ops console</a>' in body
    assert 'aria-current="page">Pools</a>' not in body


def test_pool_timeline_anchors_edge_labels_inside_the_chart(client, requester, busy_pool):
    # given the pool page's timeline
    _login(client, requester)
    chart = client.get(reverse("allocator:pool-detail", args=[busy_pool.pk])).context["chart"]

    # then a tick label near either edge is anchored to that edge, the others centred
    for x, _label, anchor in chart.tick_marks:
        expected = "start" if x < 30 else "end" if x > chart.width - 30 else "middle"
        assert anchor == expected
    assert all(
        anchor != "middle" or 30 <= x <= chart.width - 30 for x, _l, anchor in chart.tick_marks
    )


def test_last_tick_near_the_right_edge_is_anchored_to_it():
    from common.charts import TimelineChart

    chart = TimelineChart(
        width=900,
        height=200,
        plot_top=10,
        plot_height=140,
        capacity_points="",
        held_points="",
        bars=[],
        lane_height=16,
        ticks=[(10.0, "Dec 15"), (450.0, "Jan 15"), (895.0, "Mar 01")],
        now_x=0,
        max_value=1,
        truncated=0,
    )
    assert [a for _x, _l, a in chart.tick_marks] == ["start", "middle", "end"]


def test_favicon_ico_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code in (200, 301, 302)
    final = client.get("/favicon.ico", follow=True)
    assert final.status_code == 200
    assert final["Content-Type"].startswith("image/")


def test_allocation_not_started_says_when_it_starts(client, requester, pool, project):
    # given an allocation that starts in five days and one running now
    later = factories.AllocationFactory(pool=pool, project=project, gpus=8, start=in_days(5))
    factories.AllocationFactory(pool=pool, project=project, gpus=4, start=in_days(-1))
    client.force_login(requester)

    # when rita opens the project and the pool
    for url in (
        reverse("org:project-detail", args=[project.pk]),
        reverse("allocator:pool-detail", args=[pool.pk]),
    ):
        page = client.get(url).content.decode()
        body = page[page.index('id="alloc-title"') :]  # the allocations table and below
        # then the future one says when it starts, the running one is active
        assert f"Starts {later.start:%Y-%m-%d}" in body, url
        assert body.count(">Active</span>") == 1, url
