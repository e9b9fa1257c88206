"""The balance page (/balance/): executives only; editing a share with inline errors."""

import pytest
from django.urls import reverse

from allocator.models import DivisionShare
from audit.models import AuditEvent
from tests import factories
from tests.factories import in_days

URL = "/balance/"


def test_url_name():
    assert reverse("allocator:balance") == URL


@pytest.fixture
def share(research, pool):
    return factories.DivisionShareFactory(division=research, pool=pool, gpus=40)


def test_executive_sees_shares(client, executive, share, applications, team, pool):
    # given Research holds 24 now
    factories.AllocationFactory(pool=pool, project__team=team, gpus=24)
    client.force_login(executive)
    # when
    response = client.get(URL)
    # then
    assert response.status_code == 200
    html = response.content.decode()
    assert "east/H100" in html
    assert "Research" in html and "Applications" in html
    assert "62%" in html  # 40 of 64
    assert f'name="gpus-{share.division_id}"' in html


@pytest.mark.parametrize("persona", ["requester", "outsider", "division_lead", "ops", "admin_user"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_others_get_404(client, request, persona, method, share, research, pool):
    client.force_login(request.getfixturevalue(persona))
    response = getattr(client, method)(URL, {"division": research.pk, "pool": pool.pk, "gpus": 1})
    assert response.status_code == 404
    share.refresh_from_db()
    assert share.gpus == 40


def test_anonymous_redirected_to_login(client, share):
    response = client.get(URL)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_edit_share(client, executive, share, research, pool):
    client.force_login(executive)
    # when
    response = client.post(URL, {"division": research.pk, "pool": pool.pk, "gpus": 32}, follow=True)
    # then
    assert response.status_code == 200
    share.refresh_from_db()
    assert share.gpus == 32
    assert AuditEvent.objects.filter(object_type="allocator.divisionshare").count() == 1
    assert "set to 32 GPUs (was 40)" in response.content.decode()


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        ("-5", "cannot be negative"),
        ("65", "will never hold more than 64"),
        ("99999999999999999999", "more GPUs than any pool holds"),
        ("1e3", "whole number"),
        ("2.5", "whole number"),
        ("", "required"),
        ("<script>alert(1)</script>", "whole number"),
    ],
)
def test_bad_share_inline_error(client, executive, share, research, pool, gpus, message):
    client.force_login(executive)
    # when
    response = client.post(URL, {"division": research.pk, "pool": pool.pk, "gpus": gpus})
    # then the page comes back with the error next to the input, and nothing changed
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert 'aria-invalid="true"' in html
    assert "<script>alert(1)</script>" not in html
    if gpus.startswith("<script>"):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    share.refresh_from_db()
    assert share.gpus == 40
    assert not AuditEvent.objects.filter(object_type="allocator.divisionshare").exists()


@pytest.mark.parametrize(
    "data",
    [
        {"division": "999999", "pool": "POOL", "gpus": "1"},
        {"division": "DIV", "pool": "999999", "gpus": "1"},
        {"division": "abc", "pool": "POOL", "gpus": "1"},
        {"division": "<b>x</b>", "pool": "POOL", "gpus": "1"},
        {"pool": "POOL", "gpus": "1"},
    ],
)
def test_unknown_ids_error_at_top(client, executive, share, research, pool, data):
    data = {k: {"POOL": str(pool.pk), "DIV": str(research.pk)}.get(v, v) for k, v in data.items()}
    client.force_login(executive)
    response = client.post(URL, data)
    assert response.status_code == 400
    html = response.content.decode()
    assert "The share was not changed" in html
    assert "<b>x</b>" not in html
    assert DivisionShare.objects.get().gpus == 40
    assert not AuditEvent.objects.filter(object_type="allocator.divisionshare").exists()


def test_cut_below_holding_flagged_with_allocations(client, executive, share, research, pool, team):
    # given Research holds 16 + 8 now
    factories.AllocationFactory(
        pool=pool, project__team=team, project__name="Bigrun", gpus=16, end=in_days(20)
    )
    small = factories.AllocationFactory(pool=pool, project__team=team, gpus=8, end=in_days(20))
    client.force_login(executive)
    # when cut to 10: 14 over, the 16-GPU allocation covers it
    response = client.post(URL, {"division": research.pk, "pool": pool.pk, "gpus": 10}, follow=True)
    # then
    html = response.content.decode()
    share.refresh_from_db()
    assert share.gpus == 10
    reclaim = html[html.index('class="reclaim-list"') :]
    reclaim = reclaim[: reclaim.index("</ul>")]
    assert f"Bigrun ({team.name})" in reclaim
    assert small.project.name not in reclaim
    assert "over by 14" in html
    # and no internal allocation or change number shows
    assert "allocation #" not in html and "change #" not in html


def test_overcommitted_pool_warned(client, executive, share, applications, pool):
    client.force_login(executive)
    response = client.post(
        URL, {"division": applications.pk, "pool": pool.pk, "gpus": 30}, follow=True
    )
    html = response.content.decode()
    assert "add up to 70 GPUs, more than its capacity of 64" in html
    assert "above capacity" in html


def test_no_shares_no_pools_page_renders(client, executive):
    client.force_login(executive)
    response = client.get(URL)
    assert response.status_code == 200
    assert "No pools yet." in response.content.decode()


def _lab(n_pools, team, other_team, research, applications):
    for _ in range(n_pools):
        pool = factories.PoolFactory(capacity=64)
        factories.DivisionShareFactory(division=research, pool=pool, gpus=30)
        factories.DivisionShareFactory(division=applications, pool=pool, gpus=50)
        factories.AllocationFactory(pool=pool, project__team=team, gpus=40)
        factories.AllocationFactory(pool=pool, project__team=other_team, gpus=8)


@pytest.mark.parametrize("n_pools", [3, 30])
def test_bounded_queries(
    client, executive, team, other_team, research, applications, n_pools, django_assert_num_queries
):
    # given
    _lab(n_pools, team, other_team, research, applications)
    client.force_login(executive)
    # when / then (a cold cache): session, user, role grants, memberships, pools, divisions,
    # shares, the pools' cache marks, pool summaries (capacity, holdings), allocations to
    # reclaim, unread notifications. Warm: tests/allocator/test_summaries_cache.py
    with django_assert_num_queries(12):
        response = client.get(URL, {"cluster": "all"})
    assert response.status_code == 200
    assert response.content.decode().count("over by 10") == n_pools


# --- one form per pool, a cluster at a time, allocations named by project and request --------


def test_one_form_per_pool_saves_every_division_at_once(
    client, executive, share, research, applications, pool
):
    client.force_login(executive)
    # when the pool's form sends both divisions' shares
    response = client.post(
        URL,
        {"pool": pool.pk, f"gpus-{research.pk}": 20, f"gpus-{applications.pk}": 12},
        follow=True,
    )
    # then both are set, each an audited decision, and the page says so
    assert response.status_code == 200
    got = dict(DivisionShare.objects.values_list("division_id", "gpus"))
    assert got == {research.pk: 20, applications.pk: 12}
    assert AuditEvent.objects.filter(object_type="allocator.divisionshare").count() == 2
    html = response.content.decode()
    assert "set to 20 GPUs (was 40)" in html and "set to 12 GPUs (was 0)" in html
    assert html.count('<form method="post"') == 2  # this pool's form and the sign-out form


def test_a_bad_value_in_the_pool_form_saves_none(
    client, executive, share, research, applications, pool
):
    client.force_login(executive)
    response = client.post(
        URL, {"pool": pool.pk, f"gpus-{research.pk}": 20, f"gpus-{applications.pk}": "-3"}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "A share cannot be negative." in html
    assert 'value="-3" aria-invalid="true"' in html
    assert DivisionShare.objects.get().gpus == 40
    assert not AuditEvent.objects.filter(object_type="allocator.divisionshare").exists()


def test_a_refused_second_share_rolls_back_the_first(
    client, executive, share, research, applications, pool
):
    # given a value the form accepts but the service refuses (above what the pool ever holds)
    client.force_login(executive)
    response = client.post(
        URL, {"pool": pool.pk, f"gpus-{research.pk}": 20, f"gpus-{applications.pk}": 5000}
    )
    assert response.status_code == 400
    assert "will never hold more than 64 GPUs" in response.content.decode()
    assert DivisionShare.objects.get(division=research).gpus == 40
    assert not AuditEvent.objects.filter(object_type="allocator.divisionshare").exists()


def test_many_pools_show_one_cluster_at_a_time(client, executive, research):
    # given more pools than a page shows, in two clusters
    for i in range(8):
        factories.PoolFactory(cluster="alpha", gpu_model=f"A{i}", capacity=8)
        factories.PoolFactory(cluster="beta", gpu_model=f"B{i}", capacity=8)
    client.force_login(executive)
    # when the page opens, then only the first cluster shows, with the filter
    html = client.get(URL).content.decode()
    assert "alpha/A0" in html and "beta/B0" not in html
    assert 'name="cluster"' in html and "Pools of alpha: 8 of 16." in html
    # when the other cluster, or all, is chosen
    html = client.get(URL, {"cluster": "beta"}).content.decode()
    assert "beta/B7" in html and "alpha/A0" not in html
    html = client.get(URL, {"cluster": "all"}).content.decode()
    assert "alpha/A0" in html and "beta/B7" in html
    # and an unknown cluster falls back to the first
    html = client.get(URL, {"cluster": "<b>x</b>"}).content.decode()
    assert "alpha/A0" in html and "<b>x</b>" not in html


def test_a_save_returns_to_the_pools_cluster(client, executive, research):
    for i in range(8):
        factories.PoolFactory(cluster="alpha", gpu_model=f"A{i}", capacity=8)
    beta = factories.PoolFactory(cluster="beta", gpu_model="B", capacity=8)
    for i in range(5):
        factories.PoolFactory(cluster="gamma", gpu_model=f"G{i}", capacity=8)
    client.force_login(executive)
    response = client.post(URL, {"pool": beta.pk, f"gpus-{research.pk}": 4})
    assert response.status_code == 302
    assert response["Location"].endswith("?cluster=beta")


def test_reclaim_list_names_the_request(
    client, executive, share, research, pool, project, requester
):
    # given an allocation made by an approved request, Research cut below it
    from allocator import services
    from requests_app.models import ComputeRequest

    change = factories.AllocationChangeFactory(
        pool=pool, project=project, gpus=30, start=in_days(-1), end=in_days(10)
    )
    req = factories.ComputeRequestFactory(
        project=project, pool=pool, requester=requester, change=change
    )
    services.allocation_change_apply(change_id=change.pk)
    client.force_login(executive)
    # when
    response = client.post(URL, {"division": research.pk, "pool": pool.pk, "gpus": 10}, follow=True)
    # then the allocation is named by its project, team and request number
    html = response.content.decode()
    assert f"{project.name} ({project.team.name}), " in html
    assert f'href="/requests/{req.pk}/">request #{req.pk}</a>' in html
    assert f"#{change.pk} " not in html and "change #" not in html
    assert ComputeRequest.objects.get(pk=req.pk).change_id == change.pk
