"""The request pages in the browser's terms: filing with inline errors, the demo flow, what
each viewer sees and may do, escaped justifications, and bounded queries on the lists."""

from datetime import UTC, timedelta

import pytest
from django.urls import reverse

from allocator.models import AllocationChange
from allocator.waiting import when
from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests import factories


def _form(project, pool, **overrides):
    start = factories.in_days(2)
    data = {
        "project": project.pk,
        "pool": pool.pk,
        "kind": "new",
        "gpus": 8,
        "start": start.strftime("%Y-%m-%dT%H:%M"),
        "end": (start + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M"),
        "priority": "normal",
        "goal": "Train the next model.",
        "expected_outcome": "A checkpoint that beats the baseline.",
        "size_rationale": "Eight GPUs for two weeks fits the data.",
        "impact_if_denied": "The milestone slips a month.",
    }
    data.update(overrides)
    return data


def test_demo_flow_rita_files_and_rlead_approves(
    web, requester, division_lead, research, project, pool
):
    # given rita signed in, and Research's share of east/H100 covers her request
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    client = web(requester)
    assert client.get(reverse("requests:create")).status_code == 200

    # when she files and submits in one go
    response = client.post(reverse("requests:create"), {**_form(project, pool), "then_submit": "1"})

    # then
    req = ComputeRequest.objects.get()
    assert response.status_code == 302 and response.url == reverse("requests:detail", args=[req.pk])
    assert req.status == Status.PENDING_DIVISION
    page = client.get(response.url).content.decode()
    assert f"Request #{req.pk} submitted for division review." in page
    assert "Withdraw" in page and 'value="approve"' not in page

    # when rlead opens the inbox and approves
    client = web(division_lead)
    inbox = client.get(reverse("requests:inbox")).content.decode()
    assert f"#{req.pk}" in inbox
    detail = client.get(reverse("requests:detail", args=[req.pk])).content.decode()
    assert 'value="approve"' in detail and "Withdraw" not in detail
    response = client.post(reverse("requests:decide", args=[req.pk]), {"action": "approve"})

    # then
    assert response.status_code == 302
    req.refresh_from_db()
    assert req.status == Status.APPROVED
    assert AllocationChange.objects.filter(pk=req.change_id).exists()
    assert f"#{req.pk}" not in client.get(reverse("requests:inbox")).content.decode()


def test_large_request_needs_executive_and_reasons_show(
    web, requester, division_lead, executive, project, research
):
    # given a big pool where Research's share is generous
    pool = factories.PoolFactory(cluster="east2", gpu_model="H100", capacity=1024)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=614)
    client = web(requester)

    # when rita files 300 GPUs
    client.post(reverse("requests:create"), {**_form(project, pool, gpus=300), "then_submit": "1"})
    req = ComputeRequest.objects.get()

    # then the page says why executives must review it
    page = client.get(reverse("requests:detail", args=[req.pk])).content.decode()
    assert "Executive review is also needed" in page
    assert "Asks for 300 GPUs, at or above the 256-GPU large-request mark." in page

    # when rlead approves, it goes to exec, who approves
    web(division_lead).post(reverse("requests:decide", args=[req.pk]), {"action": "approve"})
    req.refresh_from_db()
    assert req.status == Status.PENDING_EXECUTIVE
    inbox = web(executive).get(reverse("requests:inbox")).content.decode()
    assert f"#{req.pk}" in inbox and "Executive" in inbox
    web(executive).post(reverse("requests:decide", args=[req.pk]), {"action": "approve"})
    req.refresh_from_db()
    assert req.status == Status.APPROVED


BAD_FORMS = [
    ("zero gpus", {"gpus": "0"}, "gpus", "Ask for at least one GPU."),
    ("negative gpus", {"gpus": "-3"}, "gpus", "Ask for at least one GPU."),
    ("too many gpus", {"gpus": "65"}, "gpus", "will never hold more than 64 GPUs"),
    (
        "end before start",
        {"end": factories.in_days(1).strftime("%Y-%m-%dT%H:%M")},
        "end",
        "after the start",
    ),
    (
        "start in past",
        {"start": factories.in_days(-1).strftime("%Y-%m-%dT%H:%M")},
        "start",
        "in the past",
    ),
    ("unknown pool", {"pool": "999999"}, "pool", "Select a valid choice"),
    ("unknown project", {"project": "999999"}, "project", "Select a valid choice"),
    ("empty goal", {"goal": "  "}, "goal", "This field is required"),
    ("goal too long", {"goal": "x" * 4001}, "goal", "at most 4000 characters"),
]


@pytest.mark.parametrize(
    ("case", "override", "field", "text"), BAD_FORMS, ids=[c[0] for c in BAD_FORMS]
)
def test_form_errors_inline_and_nothing_saved(
    web, requester, project, pool, case, override, field, text
):
    # when
    response = web(requester).post(reverse("requests:create"), {**_form(project, pool), **override})

    # then
    assert response.status_code == 400
    form = response.context["form"]
    assert field in form.errors, form.errors
    assert text.lower() in " ".join(form.errors[field]).lower()
    assert text.split("<")[0] in response.content.decode().replace("&#x27;", "'")
    assert not ComputeRequest.objects.exists()


def test_foreign_project_is_not_offered(web, requester, outsider, project, pool):
    # when paul posts Research's project
    response = web(outsider).post(reverse("requests:create"), _form(project, pool))

    # then
    assert response.status_code == 400
    assert "project" in response.context["form"].errors
    assert "Atlas" not in response.content.decode()


XSS = [
    '<script>alert("x")</script>',
    '<img src=x onerror="alert(1)">',
    '"><svg onload=alert(1)>',
    "javascript:alert(1)",
]


@pytest.mark.parametrize("payload", XSS)
def test_justification_markup_is_shown_escaped(
    web, requester, division_lead, make_request, payload
):
    # given
    req = make_request(
        Status.PENDING_DIVISION,
        goal=payload,
        expected_outcome=payload,
        size_rationale=payload,
        impact_if_denied=payload,
    )
    # a comment with markup too
    web(division_lead).post(
        reverse("requests:decide", args=[req.pk]), {"action": "request_changes", "comment": payload}
    )

    # when
    page = web(requester).get(reverse("requests:detail", args=[req.pk])).content.decode()

    # then the markup is text: never an element or attribute
    assert "<script>alert" not in page
    assert "<img src=x" not in page and "<svg onload" not in page
    if payload.startswith("<"):
        assert payload.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") in page


def test_edit_after_changes_requested_and_resubmit(web, make_request, requester, division_lead):
    # given
    req = make_request(Status.CHANGES_REQUESTED)
    client = web(requester)
    form = client.get(reverse("requests:edit", args=[req.pk]))
    assert "Changes were requested" in form.content.decode()

    # when
    response = client.post(
        reverse("requests:edit", args=[req.pk]),
        {**_form(req.project, req.pool, gpus=4), "then_submit": "1"},
    )

    # then
    assert response.status_code == 302
    req.refresh_from_db()
    assert (req.gpus, req.status, req.round) == (4, Status.PENDING_DIVISION, 2)


def test_reject_without_comment_shows_inline_error(web, make_request, division_lead):
    # given
    req = make_request(Status.PENDING_DIVISION)

    # when
    response = web(division_lead).post(
        reverse("requests:decide", args=[req.pk]), {"action": "reject"}
    )

    # then
    assert response.status_code == 400
    assert "a comment is required" in response.content.decode()
    req.refresh_from_db()
    assert req.status == Status.PENDING_DIVISION


def test_stale_decision_returns_with_a_message(web, make_request, division_lead, second_lead):
    # given lead 2 approved first
    req = make_request(Status.PENDING_DIVISION)
    web(second_lead).post(reverse("requests:decide", args=[req.pk]), {"action": "approve"})

    # when rlead's older page posts a rejection
    client = web(division_lead)
    response = client.post(
        reverse("requests:decide", args=[req.pk]),
        {"action": "reject", "comment": "No"},
        follow=True,
    )

    # then
    assert "it is not waiting for a decision" in response.content.decode()
    req.refresh_from_db()
    assert req.status == Status.APPROVED


def test_detail_shows_audit_timeline(web, make_request, requester, division_lead):
    req = make_request(Status.PENDING_DIVISION)
    web(division_lead).post(reverse("requests:decide", args=[req.pk]), {"action": "approve"})
    page = web(requester).get(reverse("requests:detail", args=[req.pk])).content.decode()
    assert "rlead approved the division review." in page


def test_inbox_shows_share_effect(web, make_request, division_lead, research, project, pool):
    # given Research holds 24 of its 32-GPU share
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    factories.AllocationFactory(pool=pool, project=project, gpus=24, end=factories.in_days(60))
    make_request(Status.PENDING_DIVISION, gpus=16)

    # when
    page = web(division_lead).get(reverse("requests:inbox")).content.decode()

    # then
    req = ComputeRequest.objects.get(gpus=16)
    assert (
        f"On {when(req.start)}, its peak, when {pool.name} has 64 GPUs, Research holds 24 (38%) "
        "against a share of 32 (50%); after approving, 40 (62%)."
    ) in page
    assert "above share" in page


def test_share_effect_percentages_use_the_capacity_at_the_peak(
    web, make_request, division_lead, research, project, pool
):
    # given 64 GPUs now and 64 more arriving before the request starts (the old preview divided
    # by today's capacity: 72 of 64, 112%)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    factories.CapacityChangeFactory(pool=pool, delta=64, effective_at=factories.in_days(1))
    factories.AllocationFactory(pool=pool, project=project, gpus=24, end=factories.in_days(60))
    req = make_request(
        Status.PENDING_DIVISION, gpus=48, start=factories.in_days(2), end=factories.in_days(9)
    )
    # when the lead opens the inbox
    page = web(division_lead).get(reverse("requests:inbox")).content.decode()
    # then every percentage is of the 128 GPUs the pool has at that instant
    assert (
        f"On {when(req.start)}, its peak, when {pool.name} has 128 GPUs, Research holds 24 (19%) "
        "against a share of 32 (25%); after approving, 72 (56%)."
    ) in page


def test_inbox_oldest_first_and_only_my_stage(
    web, make_request, division_lead, executive, other_lead, outsider, other_team
):
    # given
    old = make_request(Status.PENDING_DIVISION)
    ComputeRequest.objects.filter(pk=old.pk).update(
        submitted_at=factories.in_days(-5), stage_entered_at=factories.in_days(-5)
    )
    new = make_request(Status.PENDING_DIVISION)
    at_exec = make_request(Status.PENDING_EXECUTIVE)
    foreign = make_request(
        Status.PENDING_DIVISION,
        project=factories.ProjectFactory(team=other_team),
        requester=outsider,
    )

    # when
    lead_rows = [
        i["req"].pk for i in web(division_lead).get(reverse("requests:inbox")).context["items"]
    ]
    exec_rows = [
        i["req"].pk for i in web(executive).get(reverse("requests:inbox")).context["items"]
    ]

    # then
    assert lead_rows == [old.pk, new.pk]
    assert exec_rows == [at_exec.pk]
    assert foreign.pk not in lead_rows


def _populate(n, make_request, research, team, pool):
    for i in range(n):
        project = factories.ProjectFactory(team=team, confidential=i % 3 == 0)
        make_request(
            [Status.PENDING_DIVISION, Status.APPROVED, Status.ALLOCATED, Status.CHANGES_REQUESTED][
                i % 4
            ],
            project=project,
        )
        factories.TeamFactory(division=research)


@pytest.mark.parametrize("n", [3, 30])
def test_list_queries_are_bounded(
    web, make_request, requester, research, team, pool, n, django_assert_max_num_queries
):
    # given n requests (and n more teams in the filter's dropdown)
    _populate(n, make_request, research, team, pool)
    client = web(requester)

    # then the same bound holds at both sizes:
    # session, user, roles (2), count, page, division/team/pool choices (3), unread count;
    # forecasts: the stored ones (1), and while stale their refresh (allocator/forecast/
    # stored.py: the row lock, the simulation's rows (6), the write)
    with django_assert_max_num_queries(20):
        response = client.get(reverse("requests:list") + "?q=Train")
    assert len(response.context["page"].object_list) == min(n, 25)


@pytest.mark.parametrize("n", [3, 30])
def test_inbox_queries_are_bounded(
    web, make_request, division_lead, research, team, pool, n, django_assert_max_num_queries
):
    # given n pending requests in several pools
    for i in range(n):
        make_request(
            Status.PENDING_DIVISION, pool=pool if i % 2 else factories.PoolFactory(capacity=64)
        )
    client = web(division_lead)

    # session, user, roles (2), count, page, shares: capacity, allocations, shares, unread count;
    # what approving would do: the pools' tokens (1; while their stored forecast is stale, its
    # refresh: the row lock, the simulation's rows (6), the write, the tokens again), the pools'
    # rows (6) for the simulation with and without each one; the competing pending requests (1)
    # and, on a cold cache, their pools' rows again (6); the sort-and-filter form's pool and
    # division choices (2)
    with django_assert_max_num_queries(36):
        response = client.get(reverse("requests:inbox"))
    assert len(response.context["items"]) == min(n, 25)


def test_detail_queries_are_bounded(web, make_request, requester, django_assert_max_num_queries):
    req = make_request(Status.PENDING_DIVISION)
    client = web(requester)
    with django_assert_max_num_queries(12):
        client.get(reverse("requests:detail", args=[req.pk]))


def test_list_filters(web, make_request, requester, pool):
    mine = make_request(Status.PENDING_DIVISION)
    other = make_request(Status.APPROVED, requester=factories.UserFactory())
    client = web(requester)

    def ids(query):
        return [
            r.pk for r in client.get(reverse("requests:list") + query).context["page"].object_list
        ]

    assert set(ids("?mine=1")) == {mine.pk}
    assert set(ids("?status=approved")) == {other.pk}
    assert set(ids(f"?pool={pool.pk}")) == {mine.pk, other.pk}
    assert set(ids(f"?q=%23{mine.pk}")) == {mine.pk}


def test_every_mistake_shows_at_once(web, requester, project, pool):
    # when the goal is missing AND the GPUs and end are wrong
    data = {
        **_form(project, pool),
        "goal": "",
        "gpus": "0",
        "end": factories.in_days(1).strftime("%Y-%m-%dT%H:%M"),
    }
    response = web(requester).post(reverse("requests:create"), data)

    # then all three are reported inline
    errors = response.context["form"].errors
    assert response.status_code == 400
    assert set(errors) >= {"goal", "gpus", "end"}
    assert not ComputeRequest.objects.exists()


def test_the_form_says_which_time_zone_its_times_are_in(web, requester, settings):
    # when rita opens the form
    body = web(requester).get(reverse("requests:create")).content.decode()

    # then the start and end say they are read in the server's zone (UTC here)
    assert "Start (UTC)" in body and "End (UTC)" in body
    assert "Times are in UTC" in body


def test_the_form_reads_times_in_the_configured_zone(web, requester, project, pool, settings):
    # given a server whose time zone is California's
    settings.TIME_ZONE = "America/Los_Angeles"
    start = factories.in_days(3).replace(hour=9, minute=0, second=0, microsecond=0)
    data = _form(
        project,
        pool,
        start=start.strftime("%Y-%m-%dT09:00"),
        end=(start + timedelta(days=7)).strftime("%Y-%m-%dT09:00"),
    )

    # when rita files a request for 09:00
    client = web(requester)
    assert "Start (America/Los_Angeles)" in client.get(reverse("requests:create")).content.decode()
    response = client.post(reverse("requests:create"), data)

    # then it is stored as 09:00 in Los Angeles (16:00 or 17:00 UTC), not 09:00 UTC
    assert response.status_code == 302, response.content.decode()[:2000]
    req = ComputeRequest.objects.get()
    assert req.start.astimezone(UTC).hour in (16, 17)


def test_a_time_that_does_not_exist_in_the_zone_is_refused(web, requester, project, pool, settings):
    # given California, where 2027-03-14 02:30 does not exist (clocks jump from 02:00 to 03:00)
    settings.TIME_ZONE = "America/Los_Angeles"
    data = _form(project, pool, start="2027-03-14T02:30", end="2027-03-20T09:00")

    # when rita files it
    response = web(requester).post(reverse("requests:create"), data)

    # then the form says so and nothing is saved
    assert response.status_code == 400
    assert "America/Los_Angeles" in " ".join(response.context["form"].errors["start"])
    assert not ComputeRequest.objects.exists()


EVERY_MISTAKE = {
    "gpus": "0",
    "priority": "asap",
    "goal": "",
}


def _every_mistake_shown(response):
    body = response.content.decode()
    assert response.status_code == 400
    assert "Ask for at least one GPU." in body
    assert "The end must be after the start." in body
    assert "Select a valid choice. asap is not one of the available choices." in body
    assert "This field is required." in body  # the goal


def test_every_mistake_shows_at_once_with_a_bad_choice_too(web, requester, project, pool):
    # when a field does not parse (the priority) beside rule errors (GPUs, end) and a missing goal
    start = factories.in_days(3)
    data = {
        **_form(project, pool),
        **EVERY_MISTAKE,
        "start": start.strftime("%Y-%m-%dT%H:%M"),
        "end": (start - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
    }
    response = web(requester).post(reverse("requests:create"), data)

    # then the page shows all four messages at once, and nothing is filed
    _every_mistake_shown(response)
    assert not ComputeRequest.objects.exists()


def test_every_mistake_shows_at_once_when_editing(web, requester, project, pool):
    # given a draft
    req = factories.ComputeRequestFactory(requester=requester, project=project, pool=pool)
    start = factories.in_days(3)
    data = {
        **_form(project, pool),
        **EVERY_MISTAKE,
        "start": start.strftime("%Y-%m-%dT%H:%M"),
        "end": (start - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
    }

    # when
    response = web(requester).post(reverse("requests:edit", args=[req.pk]), data)

    # then
    _every_mistake_shown(response)
    req.refresh_from_db()
    assert (req.gpus, req.priority) == (8, "normal")
