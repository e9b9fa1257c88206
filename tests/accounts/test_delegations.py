"""Delegation and out-of-office (issue: approvals that never stall): a lead or an executive names
a delegate for a time range, for their stage only; separation of duties holds for the delegate and
the delegator alike; decisions read "X on behalf of Y"; delegations are listed, audited and end by
themselves. And GET /api/v1/me/ (PRODUCT.md section 9)."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Delegation
from audit.models import AuditEvent
from org.models import RoleGrant
from requests_app.models import ApprovalStep
from requests_app.workflow import Stage, Status
from tests import factories
from tests.support.requests import build_request

pytestmark = pytest.mark.django_db


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def deputy(db):
    return factories.UserFactory(username="dana")


@pytest.fixture
def second_lead(research):
    user = factories.UserFactory(username="rlead2")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    return user


def pending(state, *, requester, project, pool, decider, **fields):
    return build_request(
        state,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=decider,
        **fields,
    )


def delegate_executive(executive, deputy, **fields):
    return factories.DelegationFactory(delegator=executive, delegate=deputy, **fields)


# --- naming a delegate ------------------------------------------------------------------------


def test_an_executive_names_a_delegate_for_a_week(executive, deputy):
    # when
    start = timezone.now().replace(microsecond=0)
    response = api(executive).post(
        "/api/v1/delegations/",
        {
            "delegate": "dana",
            "role": "executive",
            "start": start.isoformat(),
            "end": (start + timedelta(days=7)).isoformat(),
        },
        format="json",
    )
    # then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["delegator"] == "exec" and body["delegate"] == "dana"
    assert body["role"] == "executive" and body["division"] is None
    event = AuditEvent.objects.get(action="delegation.create")
    assert "exec named dana to decide the executive review on their behalf" in event.message
    assert deputy.notifications.filter(message__contains="named you to decide").exists()


@pytest.mark.parametrize(
    "who, body, code, field",
    [
        ("requester", {"role": "executive"}, 403, None),
        ("division_lead", {"role": "executive"}, 403, None),
        ("executive", {"role": "division_lead"}, 400, "division"),
        ("executive", {"role": "executive", "delegate": "exec"}, 400, "delegate"),
        ("executive", {"role": "executive", "delegate": "nobody"}, 400, "delegate"),
        ("executive", {"role": "executive", "days": -1}, 400, "end"),
        ("executive", {"role": "executive", "days": 400}, 400, "end"),
        ("executive", {"role": "owner"}, 400, "role"),
    ],
)
def test_only_the_holder_delegates_their_own_stage(
    request, deputy, executive, division_lead, requester, research, who, body, code, field
):
    start = timezone.now()
    days = body.pop("days", 7)
    data = {
        "delegate": "dana",
        "start": start.isoformat(),
        "end": (start + timedelta(days=days)).isoformat(),
        **body,
    }
    if body.get("role") == "division_lead" and who == "division_lead":
        data["division"] = research.pk
    response = api(request.getfixturevalue(who)).post("/api/v1/delegations/", data, format="json")
    assert response.status_code == code, response.content
    if field:
        assert field in response.json()["errors"]
    assert not Delegation.objects.exists()


def test_a_lead_delegates_only_their_division(division_lead, deputy, applications, research):
    start = timezone.now()
    body = {
        "delegate": "dana",
        "role": "division_lead",
        "start": start.isoformat(),
        "end": (start + timedelta(days=3)).isoformat(),
    }
    other = api(division_lead).post(
        "/api/v1/delegations/", {**body, "division": applications.pk}, format="json"
    )
    assert other.status_code == 403
    assert "not a lead of Applications" in other.json()["detail"]
    own = api(division_lead).post(
        "/api/v1/delegations/", {**body, "division": research.pk}, format="json"
    )
    assert own.status_code == 201
    assert own.json()["division"] == "Research"


# --- deciding on someone's behalf -------------------------------------------------------------


def test_the_delegate_decides_the_executive_review_shown_on_behalf(
    executive, deputy, requester, project, pool, second_lead
):
    # given the executive away with dana as delegate, and a request waiting for executive review
    delegate_executive(executive, deputy)
    req = pending(
        Status.PENDING_EXECUTIVE,
        requester=requester,
        project=project,
        pool=pool,
        decider=second_lead,
    )
    # when dana approves
    response = api(deputy).post(f"/api/v1/requests/{req.pk}/approve/", {}, format="json")
    # then it is approved, recorded as dana on behalf of exec
    assert response.status_code == 200, response.content
    step = ApprovalStep.objects.get(request=req, stage=Stage.EXECUTIVE)
    assert (step.decider, step.on_behalf_of) == (deputy, executive)
    shown = next(s for s in response.json()["steps"] if s["stage"] == "executive")
    assert shown["decided_by"] == "dana on behalf of exec"
    assert shown["on_behalf_of_name"] == "exec"
    assert AuditEvent.objects.filter(
        action="request.approve", message__startswith="dana on behalf of exec approved"
    ).exists()
    # and the request page says so
    client = Client()
    client.force_login(requester)
    page = client.get(f"/requests/{req.pk}/").content.decode()
    assert "by dana on behalf of exec" in page


def test_the_delegate_sees_on_the_page_for_whom_they_decide(
    executive, deputy, requester, project, pool, second_lead
):
    delegate_executive(executive, deputy)
    req = pending(
        Status.PENDING_EXECUTIVE,
        requester=requester,
        project=project,
        pool=pool,
        decider=second_lead,
    )
    client = Client()
    client.force_login(deputy)
    page = client.get(f"/requests/{req.pk}/").content.decode()
    assert "on behalf of <strong>exec</strong> (their delegate)" in page
    inbox = client.get("/requests/inbox/").content.decode()
    assert f"/requests/{req.pk}/" in inbox


def test_a_delegate_decides_only_the_delegated_stage(
    executive, deputy, requester, project, pool, second_lead
):
    delegate_executive(executive, deputy)
    req = pending(
        Status.PENDING_DIVISION,
        requester=requester,
        project=project,
        pool=pool,
        decider=second_lead,
    )
    response = api(deputy).post(f"/api/v1/requests/{req.pk}/approve/", {}, format="json")
    assert response.status_code == 403
    assert (
        response.json()["detail"]
        == "Only leads of the project's division decide the division review."
    )


def test_separation_of_duties_holds_for_the_delegate_and_the_delegator(
    executive, deputy, requester, project, pool, second_lead, research
):
    delegate_executive(executive, deputy)
    factories.MembershipFactory(team=project.team, user=executive)
    factories.MembershipFactory(team=project.team, user=deputy)

    def make(status, who, decider=second_lead):
        return pending(status, requester=who, project=project, pool=pool, decider=decider)

    def attempt(user, req):
        return api(user).post(f"/api/v1/requests/{req.pk}/approve/", {}, format="json")

    # the delegate may not decide their own request
    own = attempt(deputy, make(Status.PENDING_EXECUTIVE, deputy))
    assert own.status_code == 403
    assert own.json()["detail"] == "You filed this request; someone else must decide it."
    # nor one the delegator filed
    theirs = attempt(deputy, make(Status.PENDING_EXECUTIVE, executive))
    assert theirs.status_code == 403
    assert (
        theirs.json()["detail"] == "exec filed this request; you may not decide it on their behalf."
    )
    # nor the executive review of a request whose division review the delegator decided
    by_delegator = attempt(deputy, make(Status.PENDING_EXECUTIVE, requester, decider=executive))
    assert by_delegator.status_code == 403
    assert "exec decided the division review" in by_delegator.json()["detail"]
    # nor one whose division review they decided themselves (as a lead's delegate)
    factories.DelegationFactory(
        delegator=second_lead, delegate=deputy, role="division_lead", division=research
    )
    req = make(Status.PENDING_DIVISION, requester)
    req.needs_executive = True
    req.save(update_fields=["needs_executive"])
    deputy_fresh = type(deputy).objects.get(pk=deputy.pk)
    assert attempt(deputy_fresh, req).json()["status"] == "pending_executive"
    step = ApprovalStep.objects.get(request=req, stage=Stage.DIVISION)
    assert (step.decider, step.on_behalf_of) == (deputy, second_lead)
    again = attempt(type(deputy).objects.get(pk=deputy.pk), req)
    assert again.status_code == 403
    assert "You decided the division review" in again.json()["detail"]
    # and the delegator's lead, whose delegate decided the division review, is treated as if
    # they had: an executive who is that lead may not decide the executive review either
    factories.RoleGrantFactory(user=second_lead, role=RoleGrant.Role.EXECUTIVE)
    assert attempt(type(second_lead).objects.get(pk=second_lead.pk), req).status_code == 403


def test_delegations_end_by_themselves(executive, deputy, requester, project, pool, second_lead):
    delegation = delegate_executive(
        executive,
        deputy,
        starts_at=timezone.now() - timedelta(days=7),
        ends_at=timezone.now() - timedelta(seconds=1),
    )
    req = pending(
        Status.PENDING_EXECUTIVE,
        requester=requester,
        project=project,
        pool=pool,
        decider=second_lead,
    )
    response = api(deputy).post(f"/api/v1/requests/{req.pk}/approve/", {}, format="json")
    assert response.status_code == 403
    assert Delegation.objects.active().filter(pk=delegation.pk).count() == 0


def test_a_delegation_lapses_when_the_delegator_loses_the_role(
    executive, deputy, requester, project, pool, second_lead
):
    delegate_executive(executive, deputy)
    RoleGrant.objects.filter(user=executive).delete()
    req = pending(
        Status.PENDING_EXECUTIVE,
        requester=requester,
        project=project,
        pool=pool,
        decider=second_lead,
    )
    assert (
        api(deputy).post(f"/api/v1/requests/{req.pk}/approve/", {}, format="json").status_code
        == 403
    )


def test_the_delegator_ends_a_delegation_early_and_it_is_audited(executive, deputy):
    delegation = delegate_executive(executive, deputy)
    # the delegate may not end it
    assert api(deputy).post(f"/api/v1/delegations/{delegation.pk}/end/").status_code == 403
    # a stranger does not see it
    stranger = factories.UserFactory(username="sam")
    assert api(stranger).post(f"/api/v1/delegations/{delegation.pk}/end/").status_code == 404
    response = api(executive).post(f"/api/v1/delegations/{delegation.pk}/end/")
    assert response.status_code == 200
    assert response.json()["ended_early"] is not None
    assert not Delegation.objects.active().exists()
    event = AuditEvent.objects.get(action="delegation.end")
    assert event.before["revoked_at"] is None and event.after["revoked_at"] is not None
    # and both still see it listed, as history
    listed = api(deputy).get("/api/v1/delegations/").json()
    assert [d["id"] for d in listed] == [delegation.pk]


# --- GET /api/v1/me/ --------------------------------------------------------------------------


def test_me_names_teams_roles_and_active_delegations(
    requester, team, research, executive, deputy, django_assert_num_queries
):
    # given rita, on Pretraining, lead of Research, delegate of exec, and delegator of a past one
    factories.RoleGrantFactory(user=requester, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    received = delegate_executive(executive, requester)
    factories.DelegationFactory(
        delegator=requester,
        delegate=deputy,
        role="division_lead",
        division=research,
        starts_at=timezone.now() - timedelta(days=3),
        ends_at=timezone.now() - timedelta(days=1),
    )
    given = factories.DelegationFactory(
        delegator=requester, delegate=deputy, role="division_lead", division=research
    )
    client = api(requester)
    # when (three queries: teams, roles, delegations with their people)
    with django_assert_num_queries(3):
        response = client.get("/api/v1/me/")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "rita"
    assert body["teams"] == ["Pretraining"]
    assert body["roles"] == [{"role": "division_lead", "division": "Research"}]
    by_id = {d["id"]: d for d in body["delegations"]}
    assert set(by_id) == {received.pk, given.pk}
    assert by_id[received.pk]["delegator"] == "exec" and by_id[received.pk]["delegate"] == "rita"
    assert by_id[given.pk]["delegate"] == "dana" and by_id[given.pk]["division"] == "Research"


def test_me_for_an_executive_and_anonymous(executive):
    assert api(executive).get("/api/v1/me/").json() == {
        "username": "exec",
        "teams": [],
        "roles": [{"role": "executive", "division": None}],
        "delegations": [],
    }
    assert APIClient().get("/api/v1/me/").status_code in (401, 403)


def test_me_and_delegations_are_in_the_schema(executive):
    client = api(executive)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/me/" in schema["paths"]
    me = schema["components"]["schemas"]["Me"]["properties"]
    assert set(me) == {"username", "teams", "roles", "delegations"}
    assert {"post", "get"} <= set(schema["paths"]["/api/v1/delegations/"])
    assert "post" in schema["paths"]["/api/v1/delegations/{id}/end/"]
