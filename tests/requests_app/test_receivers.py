"""The engine's hand-back: change_settled moves the request with its change, once."""

import pytest

from allocator.models import AllocationChange
from allocator.signals import change_settled
from audit.models import AuditEvent
from notifications.models import Notification
from requests_app import services
from requests_app.workflow import Status


def _settle(req, outcome, reasons=None):
    change_settled.send(
        sender=AllocationChange,
        change=req.change,
        outcome=outcome,
        reasons=reasons or [],
        actor=None,
    )
    req.refresh_from_db()
    return req


def _events(req):
    return AuditEvent.objects.filter(object_type="requests_app.computerequest", object_id=req.pk)


@pytest.mark.parametrize(
    ("start", "outcome", "target"),
    [
        (Status.APPROVED, "applied", Status.ALLOCATED),
        (Status.APPROVED, "waiting", Status.WAITING),
        (Status.APPROVED, "failed", Status.FAILED),
        (Status.APPROVED, "needs_review", Status.PENDING_EXECUTIVE),
        (Status.WAITING, "applied", Status.ALLOCATED),
        (Status.WAITING, "needs_review", Status.PENDING_EXECUTIVE),
        (Status.FAILED, "retried", Status.APPROVED),
    ],
)
def test_outcome_moves_the_request(make_request, start, outcome, target):
    # given
    req = make_request(start)
    events = _events(req).count()

    # when
    _settle(req, outcome, ["the world changed"] if outcome == "needs_review" else [])

    # then one move, one audit row
    assert req.status == target
    assert _events(req).count() == events + 1
    assert _events(req).first().action == f"request.{outcome}"


def test_told_twice_moves_once(make_request):
    # given
    req = make_request(Status.APPROVED)

    # when the engine reports the same outcome twice (a redelivered task)
    _settle(req, "waiting")
    events = _events(req).count()
    _settle(req, "waiting")

    # then
    assert req.status == Status.WAITING
    assert _events(req).count() == events


@pytest.mark.parametrize("start", [Status.ALLOCATED, Status.REJECTED, Status.WITHDRAWN])
def test_impossible_move_is_ignored_not_raised(make_request, start):
    # given a request whose state does not allow it
    req = make_request(Status.APPROVED)
    req.status = start
    req.save(update_fields=["status"])

    # when / then nothing breaks the engine's transaction, and nothing moves
    _settle(req, "applied" if start != Status.ALLOCATED else "waiting")
    assert req.status == start


def test_needs_review_stores_reasons_and_tells_executives_but_not_the_division_decider(
    make_request, executive, second_lead
):
    # given an approved request whose division stage second_lead decided
    req = make_request(Status.APPROVED)

    # when the engine sends it back for executive review
    _settle(req, "needs_review", ["would put Research at 70% of east/H100 ..."])

    # then
    assert req.needs_executive
    assert req.executive_reasons == ["would put Research at 70% of east/H100 ..."]
    assert Notification.objects.filter(recipient=executive, kind="submitted").exists()
    assert not Notification.objects.filter(recipient=second_lead).exists()


def test_executive_approval_resumes_a_returned_change(make_request, executive):
    # given a change the engine sent back
    req = make_request(Status.APPROVED)
    AllocationChange.objects.filter(pk=req.change_id).update(status="needs_review")
    _settle(req, "needs_review", ["reason"])
    change_id = req.change_id

    # when an executive approves
    services.request_decide(user=executive, request_id=req.pk, action="approve")

    # then the same change is resumed, executive-reviewed; no second change
    req.refresh_from_db()
    assert req.status == Status.APPROVED
    assert req.change_id == change_id
    assert req.change.status == "pending"
    assert req.change.executive_reviewed
    assert AllocationChange.objects.count() == 1


@pytest.mark.parametrize("how", ["reject", "withdraw"])
def test_rejecting_or_withdrawing_a_returned_change_cancels_it(
    make_request, executive, requester, how
):
    # given
    req = make_request(Status.APPROVED)
    AllocationChange.objects.filter(pk=req.change_id).update(status="needs_review")
    _settle(req, "needs_review", ["reason"])

    # when
    if how == "reject":
        services.request_decide(
            user=executive, request_id=req.pk, action="reject", comment="Over the balance."
        )
    else:
        services.request_withdraw(user=requester, request_id=req.pk)

    # then
    req.refresh_from_db()
    assert req.status == (Status.REJECTED if how == "reject" else Status.WITHDRAWN)
    assert req.change.status == "cancelled"


# --- The approval notice says what happens (issue 12 item 3) ---


def _approve_and_apply(req, lead):
    from allocator import services as allocator_services

    services.request_decide(user=lead, request_id=req.pk, action="approve")
    req.refresh_from_db()
    allocator_services.allocation_change_apply(change_id=req.change_id)
    req.refresh_from_db()
    return req


def _approval_notice(requester):
    return Notification.objects.get(recipient=requester, kind="decided").message


def test_approval_notice_says_allocated_and_from_when(
    make_request, division_lead, requester, research, pool
):
    from allocator.waiting import when
    from tests import factories
    from tests.factories import in_days

    # given a pending request that fits the pool
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    req = make_request(
        Status.PENDING_DIVISION, gpus=8, start=in_days(2), end=in_days(12), flexible_start=False
    )
    # when the lead approves and the engine applies it
    req = _approve_and_apply(req, division_lead)
    # then one notice says it is approved and allocated from its start
    assert req.status == Status.ALLOCATED
    assert _approval_notice(requester) == (
        f"rlead approved the division review of your request #{req.pk}. They are allocated "
        f"from {when(req.start)}: 8 GPUs of {pool.name} until {when(req.end)}."
    )


def test_approval_notice_says_it_waits_until_when_and_why(
    make_request, division_lead, requester, research, pool, project
):
    from allocator.waiting import when
    from tests import factories
    from tests.factories import in_days

    # given 60 of the pool's 64 GPUs held until day 10
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    held = factories.AllocationFactory(
        pool=pool, project=project, gpus=60, start=in_days(-1), end=in_days(10)
    )
    req = make_request(
        Status.PENDING_DIVISION, gpus=8, start=in_days(2), end=in_days(20), flexible_start=False
    )
    # when approved and applied
    req = _approve_and_apply(req, division_lead)
    # then the notice says it waits, from when the GPUs are free, and what is short
    message = _approval_notice(requester)
    assert req.status == Status.WAITING
    assert "will be allocated shortly" not in message
    assert message.startswith(
        f"rlead approved the division review of your request #{req.pk}. It waits in the "
        f"{pool.name} queue. Only 4 of the 8 GPUs are free on {when(req.start)}, 4 short."
    )
    assert f"They are free from {when(held.end)}" in message
