"""The fast inbox: sort and filter (server-side, bounded queries), bulk decisions through the one
decide service (each item checked and audited on its own), and what the page says about who
decides and why executives review."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from requests_app.models import ApprovalStep, ComputeRequest
from requests_app.workflow import Status
from tests import factories

INBOX = reverse("requests:inbox")
DECIDE = reverse("requests:inbox-decide")


def _rows(client, **query):
    response = client.get(INBOX, query)
    assert response.status_code == 200, response.content.decode()[:500]
    return [item["req"].pk for item in response.context["items"]]


def _entered(req, **ago):
    moment = timezone.now() - timedelta(**ago)
    ComputeRequest.objects.filter(pk=req.pk).update(stage_entered_at=moment, submitted_at=moment)


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- sort and filter ---


def test_inbox_sorts_by_size(web, make_request, division_lead):
    # given
    four, sixteen, eight = (make_request(Status.PENDING_DIVISION, gpus=n) for n in (4, 16, 8))
    client = web(division_lead)

    # when / then
    assert _rows(client, sort="largest") == [sixteen.pk, eight.pk, four.pk]
    assert _rows(client, sort="smallest") == [four.pk, eight.pk, sixteen.pk]


def test_inbox_sorts_by_due_time_not_by_age(web, make_request, division_lead):
    # given: an old normal request (overdue), a normal one an hour old, an urgent one half an
    # hour old (4 h SLA: due before the normal one's three working days)
    overdue = make_request(Status.PENDING_DIVISION, priority="normal")
    _entered(overdue, days=10)
    normal = make_request(Status.PENDING_DIVISION, priority="normal")
    _entered(normal, hours=1)
    urgent = make_request(Status.PENDING_DIVISION, priority="urgent")
    _entered(urgent, minutes=30)
    client = web(division_lead)

    # when / then
    assert _rows(client) == [overdue.pk, normal.pk, urgent.pk]
    assert _rows(client, sort="due") == [overdue.pk, urgent.pk, normal.pk]


def test_inbox_filters_by_pool_division_and_size(
    web, make_request, executive, outsider, other_team, research, applications
):
    # given: executive reviews from two divisions in two pools
    west = factories.PoolFactory(cluster="west", gpu_model="A100", capacity=64)
    research_big = make_request(Status.PENDING_EXECUTIVE, gpus=32)
    research_west = make_request(Status.PENDING_EXECUTIVE, gpus=8, pool=west)
    apps_small = make_request(
        Status.PENDING_EXECUTIVE,
        gpus=2,
        project=factories.ProjectFactory(team=other_team),
        requester=outsider,
    )
    client = web(executive)

    # when / then
    assert set(_rows(client)) == {research_big.pk, research_west.pk, apps_small.pk}
    assert _rows(client, pool=west.pk) == [research_west.pk]
    assert _rows(client, division=applications.pk) == [apps_small.pk]
    assert set(_rows(client, division=research.pk)) == {research_big.pk, research_west.pk}
    assert _rows(client, min_gpus=8, max_gpus=16) == [research_west.pk]
    assert _rows(client, min_gpus=9, sort="due") == [research_big.pk]


BAD_QUERIES = [
    ({"sort": "<script>"}, "Select a valid choice"),
    ({"pool": "999999"}, "Select a valid choice"),
    ({"division": "abc"}, "Select a valid choice"),
    ({"min_gpus": "-3"}, "greater than or equal to 1"),
    ({"max_gpus": "lots"}, "Enter a whole number"),
    ({"max_gpus": "9" * 30}, "less than or equal to 1000000"),
    ({"min_gpus": "8", "max_gpus": "2"}, "no request fits"),
]


@pytest.mark.parametrize(("query", "words"), BAD_QUERIES, ids=[str(q) for q, _ in BAD_QUERIES])
def test_bad_inbox_parameters_get_a_clear_message(web, make_request, division_lead, query, words):
    # given
    req = make_request(Status.PENDING_DIVISION)

    # when
    response = web(division_lead).get(INBOX, query)

    # then: a 400 that says what is wrong, and the unfiltered inbox below it
    page = response.content.decode()
    assert response.status_code == 400
    assert words in page
    assert "the inbox below is unfiltered" in page
    assert f"#{req.pk}" in page
    assert "<script>" not in page.split("<main", 1)[1].split("</main>", 1)[0]


@pytest.mark.parametrize("sort", ["oldest", "due", "largest", "pool", "division"])
def test_inbox_query_count_does_not_grow_with_rows(
    web, make_request, division_lead, pool, sort, django_assert_num_queries
):
    # given
    client = web(division_lead)
    for _ in range(3):
        make_request(Status.PENDING_DIVISION)
    client.get(INBOX, {"sort": sort})  # warm the session and content types

    def count():
        # warm first: the impact preview's forecast is cached until the pool's ledger changes
        client.get(INBOX, {"sort": sort, "pool": pool.pk})
        with django_assert_num_queries(EXPECTED_QUERIES[sort]) as captured:
            client.get(INBOX, {"sort": sort, "pool": pool.pk})
        return len(captured)

    # when / then: the same count for 3 and for 12 rows
    small = count()
    for _ in range(9):
        make_request(Status.PENDING_DIVISION)
    assert count() == small


# session, user; the pool filter's lookup; roles, memberships and delegations (inbox_for); the
# count and the page's rows (sorted by due: the narrow due query, then the page's rows); the
# impact preview's capacity, allocations, shares, competing requests and its two forecast reads;
# the pool and division choices of the filter form; the unread notifications badge. None per row.
EXPECTED_QUERIES = dict.fromkeys(["oldest", "due", "largest", "pool", "division"], 16)


# --- bulk decisions ---


def test_bulk_approve_decides_each_and_a_refusal_does_not_stop_the_others(
    web, make_request, executive, second_lead
):
    # given: three executive reviews; exec decided the division review of the middle one
    first = make_request(Status.PENDING_EXECUTIVE)
    own_division = make_request(Status.PENDING_EXECUTIVE, division_decider=executive)
    last = make_request(Status.PENDING_EXECUTIVE)
    client = web(executive)

    # when
    response = client.post(
        DECIDE,
        {"request": [first.pk, own_division.pk, last.pk], "action": "approve", "back": "sort=due"},
        follow=True,
    )

    # then: two approved, one refused with the reason, back to the sorted inbox
    assert response.redirect_chain[-1][0] == f"{INBOX}?sort=due"
    said = _messages(response)
    assert f"#{first.pk} ({first.project.name}): approved." in said
    assert f"#{last.pk} ({last.project.name}): approved." in said
    assert (
        f"#{own_division.pk}: not approved: You decided the division review of this request; "
        "another person must decide its executive review."
    ) in said
    statuses = dict(ComputeRequest.objects.values_list("pk", "status"))
    assert statuses[first.pk] == statuses[last.pk] == Status.APPROVED
    assert statuses[own_division.pk] == Status.PENDING_EXECUTIVE
    audited = set(
        AuditEvent.objects.filter(action="request.approve").values_list("object_id", flat=True)
    )
    assert {int(pk) for pk in audited} == {first.pk, last.pk}


def test_bulk_reject_uses_each_items_comment_or_the_one_for_all(web, make_request, division_lead):
    # given
    own, shared, bare = (make_request(Status.PENDING_DIVISION) for _ in range(3))
    client = web(division_lead)

    # when: a comment for one item and one for all
    response = client.post(
        DECIDE,
        {
            "request": [own.pk, shared.pk],
            "action": "reject",
            f"comment-{own.pk}": "Pool is full that week.",
            "comment": "Not this quarter.",
        },
        follow=True,
    )
    # and a reject without any comment
    refused = client.post(DECIDE, {"request": [bare.pk], "action": "reject"}, follow=True)

    # then
    comments = dict(
        ApprovalStep.objects.filter(request__in=[own, shared]).values_list("request_id", "comment")
    )
    assert comments == {own.pk: "Pool is full that week.", shared.pk: "Not this quarter."}
    assert f"#{own.pk} ({own.project.name}): rejected." in _messages(response)
    assert (
        f"#{bare.pk}: not rejected: comment: Say why: a comment is required for this decision."
        in _messages(refused)
    )
    bare.refresh_from_db()
    assert bare.status == Status.PENDING_DIVISION


def test_one_rows_own_button_decides_only_that_row(web, make_request, division_lead):
    # given
    ticked, clicked = make_request(Status.PENDING_DIVISION), make_request(Status.PENDING_DIVISION)

    # when: Approve on one row while another is ticked
    web(division_lead).post(DECIDE, {"request": [ticked.pk], "one": f"approve:{clicked.pk}"})

    # then
    statuses = dict(ComputeRequest.objects.values_list("pk", "status"))
    assert statuses == {ticked.pk: Status.PENDING_DIVISION, clicked.pk: Status.APPROVED}


def test_a_delegate_decides_in_bulk_on_behalf_and_not_the_delegators_own(
    web, make_request, executive, team
):
    # given: exec is away; dana decides executive reviews for them, one of which exec filed
    dana = factories.UserFactory(username="dana")
    factories.DelegationFactory(delegator=executive, delegate=dana)
    theirs = make_request(Status.PENDING_EXECUTIVE)
    factories.MembershipFactory(user=executive, team=team)
    execs_own = make_request(Status.PENDING_EXECUTIVE, requester=executive)
    client = web(dana)

    # when: dana's inbox, then a bulk approval that names both
    page = client.get(INBOX).content.decode()
    response = client.post(
        DECIDE, {"request": [theirs.pk, execs_own.pk], "action": "approve"}, follow=True
    )

    # then
    assert "On behalf of <strong>exec</strong> (their delegate)" in page
    assert f"#{execs_own.pk}" not in page.split("<tbody>", 1)[1]
    said = _messages(response)
    assert f"#{theirs.pk} ({theirs.project.name}): approved." in said
    assert (
        f"#{execs_own.pk}: not approved: exec filed this request; you may not decide it on "
        "their behalf."
    ) in said
    step = ApprovalStep.objects.get(request=theirs, stage="executive")
    assert (step.decider, step.on_behalf_of) == (dana, executive)


BAD_POSTS = [
    ({"action": "approve"}, "Nothing decided: tick at least one request."),
    ({"request": ["1"], "action": "delete"}, "Nothing decided: choose Approve or Reject."),
    ({"request": ["1"]}, "Nothing decided: choose Approve or Reject."),
    ({"request": ["x1"], "action": "approve"}, "not a request number"),
    ({"one": "approve:-4"}, "not a request number"),
    ({"request": [str(n) for n in range(1, 102)], "action": "approve"}, "at most 100"),
    ({"request": ["999999"], "action": "approve"}, "#999999: not approved: no such request."),
    ({"request": ["1"], "action": "reject", "comment": "x" * 4001}, "Nothing decided"),
]


@pytest.mark.parametrize(("data", "words"), BAD_POSTS, ids=[str(d)[:40] for d, _ in BAD_POSTS])
def test_bad_bulk_posts_change_nothing_and_say_why(web, make_request, division_lead, data, words):
    # given
    req = make_request(Status.PENDING_DIVISION)

    # when
    response = web(division_lead).post(DECIDE, data, follow=True)

    # then
    assert response.status_code == 200
    assert any(words in m for m in _messages(response)), _messages(response)
    req.refresh_from_db()
    assert req.status == Status.PENDING_DIVISION


def test_bulk_needs_post_sign_in_csrf_and_the_right_to_decide(
    web, make_request, division_lead, outsider, requester
):
    # given
    req = make_request(Status.PENDING_DIVISION)

    # then: GET is refused, a stranger is sent to sign in, a post without the CSRF token is 403
    assert web(division_lead).get(DECIDE).status_code == 405
    anonymous = Client().post(DECIDE, {"request": [req.pk], "action": "approve"})
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(division_lead)
    assert strict.post(DECIDE, {"request": [req.pk], "action": "approve"}).status_code == 403
    # and neither a member of another division nor the requester decides it
    for person in (outsider, requester):
        said = _messages(
            web(person).post(DECIDE, {"request": [req.pk], "action": "approve"}, follow=True)
        )
        assert said == [
            f"#{req.pk}: not approved: Only the leads of the request's division and "
            "executives decide requests."
        ]
    req.refresh_from_db()
    assert req.status == Status.PENDING_DIVISION


# --- what the page says ---


def test_inbox_and_request_page_say_why_executives_review_and_for_whom(
    web, make_request, executive
):
    # given
    req = make_request(Status.PENDING_EXECUTIVE)  # executive_reasons: "is marked urgent"
    client = web(executive)

    # when
    inbox = client.get(INBOX).content.decode()
    detail = client.get(reverse("requests:detail", args=[req.pk])).content.decode()

    # then
    assert "Executive review because:" in inbox and "<li>Is marked urgent.</li>" in inbox
    assert "For yourself" in inbox
    assert "Is marked urgent." in detail
    assert "You decide the <strong>executive review</strong> for yourself." in detail
    assert "<kbd>j</kbd> next" in inbox and 'src="/static/js/inbox.js"' in inbox
