"""Who may decide: the right role for the stage, and separation of duties. Concurrent decisions
serialise on the row lock: one wins, the other gets a clear conflict."""

import threading

import pytest
from django.db import connection

from org.models import RoleGrant
from org.roles import forget_roles
from requests_app import policies, services
from requests_app.models import ApprovalStep, ComputeRequest
from requests_app.workflow import Status
from tests import factories


def _grant(user, role, division=None):
    factories.RoleGrantFactory(user=user, role=role, division=division)
    forget_roles(user)


def test_verdict_unpacks_and_is_falsy_when_refused(make_request, outsider):
    # given
    req = make_request(Status.PENDING_DIVISION)

    # when
    verdict = policies.can_decide(outsider, req)
    allowed, reason = verdict

    # then
    assert not verdict and allowed is False
    assert "leads" in reason


def test_requester_who_leads_the_division_cannot_decide_own_request(
    make_request, requester, research
):
    # given rita also leads Research
    _grant(requester, RoleGrant.Role.DIVISION_LEAD, research)
    req = make_request(Status.PENDING_DIVISION)

    # when / then
    with pytest.raises(services.NotAllowed, match="You filed this request"):
        services.request_decide(user=requester, request_id=req.pk, action="approve")
    assert not ApprovalStep.objects.filter(request=req).exists()


def test_nobody_decides_both_stages(make_request, division_lead, research):
    # given rlead is also an executive and approved the division stage
    _grant(division_lead, RoleGrant.Role.EXECUTIVE)
    req = make_request(Status.PENDING_DIVISION, needs_executive=True)
    services.request_decide(user=division_lead, request_id=req.pk, action="approve")

    # when rlead tries the executive stage / then
    with pytest.raises(services.NotAllowed, match="another person must decide"):
        services.request_decide(user=division_lead, request_id=req.pk, action="approve")
    req.refresh_from_db()
    assert req.status == Status.PENDING_EXECUTIVE


def test_a_new_round_frees_the_earlier_decider(make_request, division_lead, executive, requester):
    # given exec-and-lead decided the division stage of round 1, and changes were requested later
    _grant(division_lead, RoleGrant.Role.EXECUTIVE)
    req = make_request(Status.PENDING_DIVISION, needs_executive=True)
    services.request_decide(user=division_lead, request_id=req.pk, action="approve")
    services.request_decide(
        user=executive, request_id=req.pk, action="request_changes", comment="Trim it."
    )
    services.request_submit(user=requester, request_id=req.pk)
    req.refresh_from_db()
    assert req.round == 2

    # then in round 2 another lead... the same person may still decide one stage
    assert policies.can_decide(division_lead, req)


@pytest.mark.parametrize(
    ("status", "who", "allowed"),
    [
        (Status.PENDING_DIVISION, "division_lead", True),
        (Status.PENDING_DIVISION, "other_lead", False),
        (Status.PENDING_DIVISION, "executive", False),
        (Status.PENDING_DIVISION, "ops", False),
        (Status.PENDING_EXECUTIVE, "executive", True),
        (Status.PENDING_EXECUTIVE, "division_lead", False),
        (Status.PENDING_EXECUTIVE, "ops", False),
    ],
)
def test_stage_deciders(make_request, request, status, who, allowed):
    # given
    req = make_request(status)
    user = request.getfixturevalue(who)

    # when
    verdict = policies.can_decide(user, req)

    # then
    assert bool(verdict) is allowed
    assert verdict.conflict is False


def test_teammate_sees_but_may_not_edit_or_withdraw(make_request, teammate):
    # given
    req = make_request(Status.DRAFT)

    # then
    assert policies.can_view(teammate, req)
    assert not policies.can_edit(teammate, req)
    with pytest.raises(services.NotAllowed):
        services.request_withdraw(user=teammate, request_id=req.pk)


def test_requester_who_left_the_team_may_no_longer_edit(make_request, requester):
    # given
    req = make_request(Status.DRAFT)
    requester.memberships.all().delete()
    forget_roles(requester)

    # then
    assert not policies.can_edit(requester, req)


@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_transition_once(make_request, division_lead, second_lead):
    # given a pending request and two leads deciding at the same moment
    req = make_request(Status.PENDING_DIVISION)
    barrier = threading.Barrier(2)
    outcomes = {}

    def decide(user, action):
        barrier.wait()
        try:
            services.request_decide(
                user=user, request_id=req.pk, action=action, comment="Deciding."
            )
            outcomes[user.username] = "ok"
        except services.Conflict as exc:
            outcomes[user.username] = exc.message
        finally:
            connection.close()

    threads = [
        threading.Thread(target=decide, args=(division_lead, "approve")),
        threading.Thread(target=decide, args=(second_lead, "reject")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    # then exactly one decided; the other was told the request had moved on
    assert sorted(v == "ok" for v in outcomes.values()) == [False, True]
    loser = next(v for v in outcomes.values() if v != "ok")
    assert "not waiting for a decision" in loser
    req = ComputeRequest.objects.get(pk=req.pk)
    assert req.steps.count() == 1
    assert req.status in (Status.APPROVED, Status.REJECTED)
