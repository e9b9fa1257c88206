"""The whole state machine through the services: every action from every state. Allowed moves
land where PRODUCT.md section 3 says, with one audit row and one step; forbidden moves raise a
clear error and change nothing. Then the tables of workflow.py on their own: every status, every
decision and every outcome of the apply engine has its row, along an edge."""

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404

from allocator.outcomes import Outcome
from audit.models import AuditEvent
from notifications.models import Notification
from requests_app import services
from requests_app.models import ApprovalStep, ComputeRequest
from requests_app.workflow import (
    DECISION_STATUS,
    DECISIONS,
    OUTCOME_STATUS,
    TRANSITIONS,
    Action,
    Decision,
    Stage,
    Status,
    can_move,
    decision_target,
)

ALL = list(Status)

# action -> {from-state: expected to-state} for the moves a user makes.
EXPECTED = {
    "edit": {Status.DRAFT: Status.DRAFT, Status.CHANGES_REQUESTED: Status.CHANGES_REQUESTED},
    "submit": {
        Status.DRAFT: Status.PENDING_DIVISION,
        Status.CHANGES_REQUESTED: Status.PENDING_DIVISION,
    },
    "withdraw": dict.fromkeys(
        (Status.DRAFT, Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE, Status.CHANGES_REQUESTED),
        Status.WITHDRAWN,
    ),
    Action.APPROVE: {
        Status.PENDING_DIVISION: Status.APPROVED,
        Status.PENDING_EXECUTIVE: Status.APPROVED,
    },
    Action.REJECT: {
        Status.PENDING_DIVISION: Status.REJECTED,
        Status.PENDING_EXECUTIVE: Status.REJECTED,
    },
    Action.REQUEST_CHANGES: {
        Status.PENDING_DIVISION: Status.CHANGES_REQUESTED,
        Status.PENDING_EXECUTIVE: Status.CHANGES_REQUESTED,
    },
}


def _act(action, req, *, requester, division_lead, executive):
    if action == "edit":
        return services.request_update(
            user=requester, request_id=req.pk, data={"goal": "A sharper goal."}
        )
    if action == "submit":
        return services.request_submit(user=requester, request_id=req.pk)
    if action == "withdraw":
        return services.request_withdraw(user=requester, request_id=req.pk)
    decider = executive if req.status == Status.PENDING_EXECUTIVE else division_lead
    return services.request_decide(
        user=decider, request_id=req.pk, action=action, comment="Reasoned comment."
    )


def _events(req):
    return AuditEvent.objects.filter(object_type="requests_app.computerequest", object_id=req.pk)


@pytest.mark.parametrize("action", list(EXPECTED))
@pytest.mark.parametrize("status", ALL)
def test_every_action_from_every_state(
    make_request, requester, division_lead, executive, status, action
):
    # given
    req = make_request(status)
    before = ComputeRequest.objects.values().get(pk=req.pk)
    events, steps = _events(req).count(), ApprovalStep.objects.filter(request=req).count()
    target = EXPECTED[action].get(status)

    # when / then
    if target is None and status == Status.DRAFT:
        # a draft is the team's own: a lead cannot even see it
        with pytest.raises(Http404):
            _act(action, req, requester=requester, division_lead=division_lead, executive=executive)
    elif target is None:
        with pytest.raises(services.Conflict) as excinfo:
            _act(action, req, requester=requester, division_lead=division_lead, executive=executive)
        assert "this request is" in excinfo.value.message.lower()
    if target is None:
        assert ComputeRequest.objects.values().get(pk=req.pk) == before
        assert _events(req).count() == events
        assert ApprovalStep.objects.filter(request=req).count() == steps
    else:
        _act(action, req, requester=requester, division_lead=division_lead, executive=executive)
        req.refresh_from_db()
        assert req.status == target
        assert _events(req).count() == events + 1
        if action in EXPECTED and action not in ("edit", "submit", "withdraw"):
            assert ApprovalStep.objects.filter(request=req).count() == steps + 1
        if target == Status.APPROVED:
            assert req.change is not None and req.change.status == "pending"
            assert req.approved_at is not None


def test_user_moves_follow_the_transition_table():
    # given the moves users make (EXPECTED) and the table in workflow.py
    # then every user move is an edge of the table, and no terminal state has any
    for moves in EXPECTED.values():
        for source, target in moves.items():
            assert source == target or target in TRANSITIONS[source]
    for terminal in (Status.ALLOCATED, Status.REJECTED, Status.WITHDRAWN):
        assert TRANSITIONS[terminal] == set()


def test_division_approval_goes_to_executive_when_needed(
    make_request, division_lead, executive, research
):
    # given a request that needs executive review
    req = make_request(Status.PENDING_DIVISION, needs_executive=True)

    # when the division lead approves
    services.request_decide(user=division_lead, request_id=req.pk, action="approve")

    # then it waits for executives, who are told; no change is made yet
    req.refresh_from_db()
    assert req.status == Status.PENDING_EXECUTIVE
    assert req.change is None
    assert Notification.objects.filter(recipient=executive, kind="submitted").exists()
    # and when an executive approves, it is approved with an executive-reviewed change
    services.request_decide(user=executive, request_id=req.pk, action="approve")
    req.refresh_from_db()
    assert req.status == Status.APPROVED
    assert req.change.executive_reviewed is True
    assert req.change.priority == 1  # normal
    assert list(req.steps.values_list("stage", "decision")) == [
        ("division", "approved"),
        ("executive", "approved"),
    ]


@pytest.mark.parametrize("action", [Action.REJECT, Action.REQUEST_CHANGES])
def test_reject_and_request_changes_need_a_comment(make_request, division_lead, action):
    # given
    req = make_request(Status.PENDING_DIVISION)

    # when / then
    with pytest.raises(ValidationError) as excinfo:
        services.request_decide(user=division_lead, request_id=req.pk, action=action, comment=" ")
    assert "comment" in excinfo.value.message_dict
    req.refresh_from_db()
    assert req.status == Status.PENDING_DIVISION
    assert not req.steps.exists()


def test_resubmitting_after_changes_routes_again_in_a_new_round(
    make_request, requester, division_lead, settings
):
    # given a request sent back for changes
    req = make_request(Status.PENDING_DIVISION)
    services.request_decide(
        user=division_lead, request_id=req.pk, action="request_changes", comment="Fewer GPUs."
    )
    # when the requester edits it into a large one and resubmits
    settings.ALLOTMENT = {**settings.ALLOTMENT, "LARGE_REQUEST_GPUS": 8}
    services.request_update(user=requester, request_id=req.pk, data={"gpus": 9})
    services.request_submit(user=requester, request_id=req.pk)

    # then it is routed again: round 2, at division review, now also needing executives
    req.refresh_from_db()
    assert (req.status, req.round, req.needs_executive) == (Status.PENDING_DIVISION, 2, True)
    assert any("9 GPUs" in r for r in req.executive_reasons)
    # and the same lead may decide the new round
    services.request_decide(user=division_lead, request_id=req.pk, action="approve")
    req.refresh_from_db()
    assert req.status == Status.PENDING_EXECUTIVE


def test_decided_requester_is_notified_with_email(
    make_request, division_lead, requester, mailoutbox
):
    # given
    req = make_request(Status.PENDING_DIVISION)

    # when
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        services.request_decide(
            user=division_lead, request_id=req.pk, action="reject", comment="Not now."
        )

    # then
    note = Notification.objects.get(recipient=requester, kind="decided")
    assert "rejected" in note.message and "Not now." in note.message
    assert [m.to for m in mailoutbox] == [[requester.email]]


def test_submit_tells_the_division_leads_but_not_other_divisions(
    make_request, requester, division_lead, other_lead
):
    # given
    req = make_request(Status.DRAFT)

    # when
    services.request_submit(user=requester, request_id=req.pk)

    # then
    assert Notification.objects.filter(recipient=division_lead, kind="submitted").count() == 1
    assert not Notification.objects.filter(recipient=other_lead).exists()
    assert not Notification.objects.filter(recipient=requester).exists()


# --- The tables in workflow.py, on their own (pure: no database) ---------------------------


def test_every_status_has_a_row_in_the_transition_table():
    # then every status says where it may go, and every edge lands on a status
    assert set(TRANSITIONS) == set(Status)
    for targets in TRANSITIONS.values():
        assert targets <= set(Status)


@pytest.mark.parametrize("status", ALL)
def test_every_status_but_draft_is_reached_by_some_move(status):
    # then no status is a dead letter: each (but the first) is the target of an edge
    reached = set().union(*TRANSITIONS.values())
    assert (status in reached) == (status != Status.DRAFT)


def test_every_decision_action_has_a_decision():
    # then each action a reviewer takes records one decision, and every decision has an action
    assert set(DECISIONS) == {Action.APPROVE, Action.REJECT, Action.REQUEST_CHANGES}
    assert set(DECISIONS.values()) == set(Decision)
    assert set(DECISION_STATUS) == set(Decision)


@pytest.mark.parametrize(
    ("decision", "stage", "needs_executive", "target"),
    [
        (Decision.APPROVED, Stage.DIVISION, False, Status.APPROVED),
        (Decision.APPROVED, Stage.DIVISION, True, Status.PENDING_EXECUTIVE),
        (Decision.APPROVED, Stage.EXECUTIVE, True, Status.APPROVED),
        (Decision.REJECTED, Stage.DIVISION, True, Status.REJECTED),
        (Decision.REJECTED, Stage.EXECUTIVE, True, Status.REJECTED),
        (Decision.CHANGES_REQUESTED, Stage.DIVISION, False, Status.CHANGES_REQUESTED),
        (Decision.CHANGES_REQUESTED, Stage.EXECUTIVE, True, Status.CHANGES_REQUESTED),
    ],
)
def test_decision_moves_along_an_edge(decision, stage, needs_executive, target):
    # when a reviewer decides the stage a request waits at
    got = decision_target(decision, stage=stage, needs_executive=needs_executive)
    # then it lands where PRODUCT.md section 3 says, along an edge of the table
    assert got == target
    source = {Stage.DIVISION: Status.PENDING_DIVISION, Stage.EXECUTIVE: Status.PENDING_EXECUTIVE}
    assert can_move(source[stage], got)


def test_engine_outcomes_are_the_strings_it_sends():
    # the engine returns and sends these strings today; members must equal them
    assert {o.value for o in Outcome} == {"applied", "waiting", "needs_review", "failed", "retried"}
    assert all(o == o.value for o in Outcome)


# outcome -> the statuses a request is in when the engine reports it (a request already waiting
# is told "waiting" again without moving: tests/requests_app/test_receivers.py)
ENGINE_SOURCES = {
    Outcome.APPLIED: (Status.APPROVED, Status.WAITING),
    Outcome.WAITING: (Status.APPROVED,),
    Outcome.NEEDS_REVIEW: (Status.APPROVED, Status.WAITING),
    Outcome.FAILED: (Status.APPROVED, Status.WAITING),
    Outcome.RETRIED: (Status.FAILED,),
}


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_engine_outcome_moves_the_request_along_an_edge(outcome):
    # then each outcome has a status, reached along an edge of the table from every status the
    # request can be in when the engine reports it
    target = OUTCOME_STATUS[outcome]
    assert all(can_move(source, target) for source in ENGINE_SOURCES[outcome])
    assert OUTCOME_STATUS[outcome.value] == target  # plain strings from the signal find it too


def test_every_outcome_has_a_status_and_only_engine_statuses_are_targets():
    assert set(OUTCOME_STATUS) == set(Outcome)
    assert set(OUTCOME_STATUS.values()) == {
        Status.ALLOCATED,
        Status.WAITING,
        Status.PENDING_EXECUTIVE,
        Status.FAILED,
        Status.APPROVED,
    }
