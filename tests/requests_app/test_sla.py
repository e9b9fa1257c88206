"""Approval SLAs (requests_app/sla.py) with a controlled clock: the due time per stage and
priority, in working days or hours; the reminder before due; the escalation when overdue, to the
stage's deciders (delegates included), then to the executives; each once, notified and audited;
the daily digest per decider; and the due time shown in the inbox and on the request."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone

from audit.models import AuditEvent
from notifications.models import Notification
from org.models import RoleGrant
from requests_app.models import StageEscalation
from requests_app.sla import add_working_days, approvals_digest, approvals_sla_sweep, due_at
from requests_app.workflow import Status
from tests import factories
from tests.support.requests import build_request

pytestmark = pytest.mark.django_db
UTC = ZoneInfo("UTC")
# A Friday afternoon: three working days later is Wednesday afternoon.
FRIDAY = datetime(2030, 3, 1, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "start, days, expected",
    [
        (FRIDAY, 3, datetime(2030, 3, 6, 15, 0, tzinfo=UTC)),
        (FRIDAY, 1, datetime(2030, 3, 4, 15, 0, tzinfo=UTC)),
        (FRIDAY + timedelta(days=1), 1, datetime(2030, 3, 5, 15, 0, tzinfo=UTC)),  # Saturday
        (datetime(2030, 3, 4, 9, 0, tzinfo=UTC), 5, datetime(2030, 3, 11, 9, 0, tzinfo=UTC)),
    ],
)
def test_working_days_skip_the_weekend(start, days, expected):
    assert add_working_days(start, days) == expected


def test_due_per_stage_and_priority_and_settings():
    assert due_at("division", "urgent", FRIDAY) == FRIDAY + timedelta(hours=4)
    assert due_at("executive", "normal", FRIDAY) == datetime(2030, 3, 6, 15, 0, tzinfo=UTC)
    with override_settings(ALLOTMENT={"APPROVAL_SLA": {"division": {"normal": "10h"}}}):
        assert due_at("division", "normal", FRIDAY) == FRIDAY + timedelta(hours=10)
        assert due_at("division", "urgent", FRIDAY) == FRIDAY + timedelta(hours=4)


@pytest.fixture
def world(requester, project, pool, research, division_lead, executive):
    second_lead = factories.UserFactory(username="rlead2")
    factories.RoleGrantFactory(
        user=second_lead, role=RoleGrant.Role.DIVISION_LEAD, division=research
    )
    deputy = factories.UserFactory(username="dana")
    factories.DelegationFactory(
        delegator=division_lead,
        delegate=deputy,
        role="division_lead",
        division=research,
        # in force now (the pages) and on the controlled clock (the sweep)
        starts_at=timezone.now() - timedelta(days=1),
        ends_at=FRIDAY + timedelta(days=30),
    )
    req = build_request(
        Status.PENDING_DIVISION,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=second_lead,
        priority="urgent",
        stage_entered_at=FRIDAY,
    )
    return {"req": req, "second_lead": second_lead, "deputy": deputy}


def _told(user, text):
    return Notification.objects.filter(recipient=user, message__contains=text).count()


def test_reminder_then_escalation_on_a_controlled_clock(
    world, division_lead, executive, requester, settings
):
    req = world["req"]  # urgent: the division review is due 4 h after FRIDAY
    # an hour in: nothing yet
    assert approvals_sla_sweep(now=FRIDAY + timedelta(hours=1)) == {
        "reminder": 0,
        "overdue": 0,
        "executives": 0,
    }
    # with a quarter of the time left: the leads and the delegate are reminded, once
    at = FRIDAY + timedelta(hours=3, minutes=1)
    assert approvals_sla_sweep(now=at)["reminder"] == 1
    assert approvals_sla_sweep(now=at + timedelta(minutes=5))["reminder"] == 0
    for user in (division_lead, world["second_lead"], world["deputy"]):
        assert _told(user, f"Reminder: the division review of request #{req.pk}") == 1
    assert _told(requester, "Reminder") == 0
    # at the due time: overdue, to the same people, audited
    assert approvals_sla_sweep(now=FRIDAY + timedelta(hours=4))["overdue"] == 1
    assert _told(world["deputy"], f"Overdue: the division review of request #{req.pk}") == 1
    event = AuditEvent.objects.get(action="request.sla_overdue", object_id=req.pk)
    assert event.after["notified"] == ["dana", "rlead", "rlead2"]
    assert _told(executive, "Escalated") == 0
    # still undecided after another SLA period: the executives are told
    sent = approvals_sla_sweep(now=FRIDAY + timedelta(hours=8))
    assert sent == {"reminder": 0, "overdue": 0, "executives": 1}
    assert _told(executive, f"Escalated to you: the division review of request #{req.pk}") == 1
    assert AuditEvent.objects.filter(action="request.sla_executives", object_id=req.pk).exists()
    # and nothing is sent twice
    assert approvals_sla_sweep(now=FRIDAY + timedelta(hours=9)) == {
        "reminder": 0,
        "overdue": 0,
        "executives": 0,
    }
    assert StageEscalation.objects.filter(request=req).count() == 3


def test_a_decided_stage_is_not_escalated(world):
    req = world["req"]
    req.status = Status.APPROVED
    req.save(update_fields=["status"])
    assert approvals_sla_sweep(now=FRIDAY + timedelta(days=10)) == {
        "reminder": 0,
        "overdue": 0,
        "executives": 0,
    }


def _entered_a_day_ago(req):
    req.stage_entered_at = timezone.now() - timedelta(days=1)
    req.save(update_fields=["stage_entered_at"])
    return req


def test_the_daily_digest_lists_what_waits_oldest_first(
    world, division_lead, project, pool, requester
):
    older = _entered_a_day_ago(world["req"])
    newer = build_request(
        Status.PENDING_DIVISION,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=world["second_lead"],
        stage_entered_at=timezone.now() - timedelta(hours=1),
    )
    now = timezone.now()
    assert approvals_digest(now=now) >= 3  # rlead, rlead2, dana (the delegate)
    digest = Notification.objects.get(recipient=division_lead, message__contains="wait for your")
    assert digest.message.startswith("2 requests wait for your decision, oldest first")
    assert digest.message.index(f"#{older.pk} ") < digest.message.index(f"#{newer.pk} ")
    assert "overdue by" in digest.message
    # once a day
    assert approvals_digest(now=now) == 0


def test_due_time_in_the_inbox_and_on_the_request(world, division_lead):
    _entered_a_day_ago(world["req"])
    client = Client()
    client.force_login(division_lead)
    inbox = client.get("/requests/inbox/").content.decode()
    assert "overdue by" in inbox
    page = client.get(f"/requests/{world['req'].pk}/").content.decode()
    assert "Decision due" in page
    assert "(4h SLA for urgent priority)" in page


def test_the_delegate_sees_in_the_inbox_for_whom_they_decide(world):
    client = Client()
    client.force_login(world["deputy"])
    inbox = client.get("/requests/inbox/").content.decode()
    assert f"/requests/{world['req'].pk}/" in inbox
    assert "On behalf of <strong>rlead</strong> (their delegate)" in inbox
