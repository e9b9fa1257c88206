"""The overview page (/): pools, charts, upcoming arrivals and expiries, my requests and my
approvals waiting — with a bounded number of queries whatever the number of pools."""

import pytest

from allocator.models import AllocationChange
from requests_app.models import ApprovalStep
from requests_app.workflow import Stage, Status
from tests import factories
from tests.factories import in_days

URL = "/"


def test_anonymous_redirected(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(
    "persona",
    ["requester", "outsider", "division_lead", "executive", "ops", "admin_user"],
)
def test_every_role_sees_it(client, request, persona, pool):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "east/H100" in html
    assert "<svg viewBox=" in html
    assert "style=" not in html


def test_pool_figures(client, requester, pool, team):
    # given 64 GPUs, 24 held now, 8 scheduled later, 16 waiting
    factories.AllocationFactory(pool=pool, project__team=team, gpus=24)
    factories.AllocationFactory(
        pool=pool, project__team=team, gpus=8, start=in_days(3), end=in_days(9)
    )
    factories.AllocationChangeFactory(
        pool=pool, gpus=16, status=AllocationChange.Status.WAITING, project__team=team
    )
    client.force_login(requester)
    # when
    response = client.get(URL)
    # then
    statuses = {s.pool.pk: s for s in response.context["pools"]}
    s = statuses[pool.pk]
    assert (s.capacity, s.allocated, s.free, s.waiting) == (64, 24, 40, 16)
    weekly = response.context["capacity_rows"]
    assert weekly[0].capacity == 64
    assert weekly[0].held == 32  # both allocations overlap in the first week
    assert weekly[-1].held == 0


def test_chart_for_one_pool_or_summed(client, requester, pool):
    other = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=32)
    client.force_login(requester)
    summed = client.get(URL).context["capacity_rows"][0].capacity
    one = client.get(URL, {"pool": other.pk}).context["capacity_rows"][0].capacity
    assert (summed, one) == (96, 32)


@pytest.mark.parametrize("bad", ["abc", "-1", "999999", "1" * 40, "<script>"])
def test_bad_pool_choice_falls_back_to_summed(client, requester, pool, bad):
    client.force_login(requester)
    response = client.get(URL, {"pool": bad})
    assert response.status_code == 200
    assert response.context["chosen_pool"] is None
    assert "<script>" not in response.content.decode().split("<main")[1]


def test_holdings_against_share(client, executive, pool, research, team):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=20)
    factories.AllocationFactory(pool=pool, project__team=team, gpus=24)
    client.force_login(executive)
    response = client.get(URL)
    rows = {(r.pool.pk, r.division.pk): r for r in response.context["share_rows"]}
    row = rows[(pool.pk, research.pk)]
    assert (row.share, row.held_now, row.over) == (20, 24, True)
    assert "east/H100 · Research" in response.content.decode()


def test_arrivals_and_expiries(client, requester, pool, team):
    # given
    factories.CapacityChangeFactory(pool=pool, delta=32, effective_at=in_days(10), note="rack 7")
    factories.CapacityChangeFactory(pool=pool, delta=16, effective_at=in_days(-3), note="old rack")
    factories.CapacityChangeFactory(
        pool=pool, kind="decommission", delta=-8, effective_at=in_days(20), note="retire"
    )
    ending = factories.AllocationFactory(
        pool=pool, project__team=team, project__name="Ending", gpus=4, end=in_days(5)
    )
    factories.AllocationFactory(
        pool=pool, project__team=team, project__name="Later", gpus=4, end=in_days(40)
    )
    factories.AllocationFactory(
        pool=pool,
        project__team=team,
        project__name="Released",
        gpus=4,
        end=in_days(5),
        state="released",
    )
    client.force_login(requester)
    # when
    response = client.get(URL)
    # then
    assert [c.note for c in response.context["arrivals"]] == ["rack 7"]
    assert [a.pk for a in response.context["expiries"]] == [ending.pk]


def test_confidential_expiry_masked_for_outsiders(
    client, outsider, admin_user, requester, pool, team
):
    factories.AllocationFactory(
        pool=pool,
        project__team=team,
        project__name="Secretproj",
        project__confidential=True,
        end=in_days(3),
    )
    for stranger in (outsider, admin_user):  # a Django admin holds no role that sees it
        client.force_login(stranger)
        assert "Secretproj" not in client.get(URL).content.decode()
    client.force_login(requester)
    assert "Secretproj" in client.get(URL).content.decode()


def test_my_requests_latest_ten_mine_only(client, requester, teammate, project, pool):
    # given 12 of mine, one of my teammate's, one with a hostile project name
    mine = [
        factories.ComputeRequestFactory(requester=requester, project=project, pool=pool)
        for _ in range(12)
    ]
    theirs = factories.ComputeRequestFactory(requester=teammate, project=project, pool=pool)
    client.force_login(requester)
    # when
    response = client.get(URL)
    # then
    shown = [r.pk for r in response.context["my_requests"]]
    assert shown == [r.pk for r in reversed(mine)][:10]
    assert theirs.pk not in shown


def test_request_text_escaped(client, requester, team, pool):
    project = factories.ProjectFactory(team=team, name="<script>alert(1)</script>")
    factories.ComputeRequestFactory(requester=requester, project=project, pool=pool)
    client.force_login(requester)
    html = client.get(URL).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _pending(project, pool, status, requester, **kw):
    return factories.ComputeRequestFactory(
        project=project,
        pool=pool,
        requester=requester,
        status=status,
        submitted_at=in_days(-1),
        **kw,
    )


def test_approvals_waiting_for_division_lead(
    client, division_lead, requester, project, pool, other_team
):
    # given two Research requests at division review, one at executive review, one of
    # Applications, and one the lead filed
    _pending(project, pool, Status.PENDING_DIVISION, requester)
    _pending(project, pool, Status.PENDING_DIVISION, requester)
    _pending(project, pool, Status.PENDING_EXECUTIVE, requester)
    _pending(factories.ProjectFactory(team=other_team), pool, Status.PENDING_DIVISION, requester)
    _pending(project, pool, Status.PENDING_DIVISION, division_lead)
    client.force_login(division_lead)
    # when
    response = client.get(URL)
    # then
    assert response.context["approvals_waiting"] == 2
    assert 'href="/requests/inbox/"' in response.content.decode()


def test_approvals_waiting_for_executive(client, executive, requester, project, pool):
    # given one at executive review, one the executive decided at division stage, one filed by
    # the executive, one still at division review
    _pending(project, pool, Status.PENDING_EXECUTIVE, requester)
    decided = _pending(project, pool, Status.PENDING_EXECUTIVE, requester)
    ApprovalStep.objects.create(
        request=decided,
        round=decided.round,
        stage=Stage.DIVISION,
        decision="approved",
        decider=executive,
    )
    _pending(project, pool, Status.PENDING_EXECUTIVE, executive)
    _pending(project, pool, Status.PENDING_DIVISION, requester)
    client.force_login(executive)
    assert client.get(URL).context["approvals_waiting"] == 1


@pytest.mark.parametrize("persona", ["requester", "ops"])
def test_no_approvals_box_for_non_deciders(client, request, persona):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(URL)
    assert response.context["approvals_waiting"] is None


def _lab(n_pools, team, other_team, research, requester, project):
    for i in range(n_pools):
        pool = factories.PoolFactory(capacity=64)
        factories.CapacityChangeFactory(pool=pool, delta=8, effective_at=in_days(5 + i))
        factories.DivisionShareFactory(division=research, pool=pool, gpus=30)
        factories.AllocationFactory(pool=pool, project__team=team, gpus=10, end=in_days(3))
        factories.AllocationFactory(
            pool=pool, project__team=other_team, gpus=8, project__confidential=True
        )
        factories.AllocationChangeFactory(
            pool=pool, project=project, status=AllocationChange.Status.WAITING
        )
        factories.ComputeRequestFactory(
            requester=requester, project=project, pool=pool, status=Status.PENDING_DIVISION
        )


@pytest.mark.parametrize("persona", ["requester", "division_lead", "executive"])
@pytest.mark.parametrize("n_pools", [3, 30])
def test_bounded_queries(
    client,
    request,
    persona,
    n_pools,
    team,
    other_team,
    research,
    requester,
    project,
    django_assert_num_queries,
):
    # given
    _lab(n_pools, team, other_team, research, requester, project)
    user = request.getfixturevalue(persona)
    client.force_login(user)
    # when / then (a cold cache): session, user, role grants, memberships, pools, the pools'
    # cache marks, their summaries (2), waiting demand, the chart series, divisions, shares,
    # arrivals, expiries, my requests, [approvals count, the delegations it counts], unread
    # count; for a team member "My GPUs": the teams' allocations and their approved or waiting
    # requests (2; forecasts only when some wait). Warm: tests/allocator/test_summaries_cache.py
    expected = 18
    with django_assert_num_queries(expected):
        response = client.get(URL)
    assert response.status_code == 200
    assert len(response.context["pools"]) == n_pools


def test_my_gpus_says_what_i_hold_what_starts_when_and_what_waits(
    client, requester, pool, project, research
):
    from django.core.cache import cache

    from allocator import services
    from tests.support.requests import build_request

    cache.clear()
    # given my team holds 40 of the pool's 64 GPUs until day 5, has 8 more from day 6, and a
    # fixed request for 32 over days 1-20 that waits for day 5
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    factories.AllocationFactory(pool=pool, project=project, gpus=40, end=in_days(5))
    factories.AllocationFactory(
        pool=pool, project=project, gpus=8, start=in_days(6), end=in_days(7)
    )
    lead = factories.UserFactory(username="lead2")
    req = build_request(
        Status.APPROVED,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=lead,
        gpus=32,
        start=in_days(1),
        end=in_days(20),
    )
    services.allocation_change_apply(change_id=req.change_id)
    # when I open the overview
    client.force_login(requester)
    html = client.get(URL).content.decode()
    # then "My GPUs" comes first, with the numbers
    assert html.index("My GPUs") < html.index("My requests")
    section = html[
        html.index('id="my-gpus"') : html.index("</section>", html.index('id="my-gpus"'))
    ]
    assert "40</span> GPUs held now · 1 allocation starting later · 1 request waiting" in section
    assert "<strong>40 × east/H100</strong> for Atlas, until" in section
    assert "<strong>8 × east/H100</strong> for Atlas, from" in section
    assert f"#{req.pk}</a> <strong>32 × east/H100</strong> for Atlas: expected start" in section
    assert "(15 of its 19 days)" in section


@pytest.mark.parametrize("persona", ["requester", "ops"])
def test_no_empty_approvals_card_for_people_who_decide_nothing(client, request, persona):
    # when someone who decides no stage opens the overview
    client.force_login(request.getfixturevalue(persona))
    body = client.get(URL).content.decode()

    # then there is no "My approvals waiting" card at all
    assert "My approvals waiting" not in body
    assert "You decide no approval stage." not in body
