"""The fast inbox in a real browser: the keyboard shortcuts (j/k, a, r with its reason, o) and a
bulk decision of ticked requests, at desktop width; every column readable at 375 px."""

import re

import pytest
from playwright.sync_api import expect

from org.models import RoleGrant
from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests import factories
from tests.browser.conftest import PHONE
from tests.browser.test_layout import CHECK_COLUMNS, CHECK_PAGE
from tests.support.requests import build_request

pytestmark = pytest.mark.browser


@pytest.fixture
def waiting(requester, project, pool, research):
    """Five requests waiting for Research's division review, oldest first."""
    second = factories.UserFactory(username="rlead2")
    factories.RoleGrantFactory(user=second, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    built = []
    for hours in (50, 40, 30, 20, 10):
        req = build_request(
            Status.PENDING_DIVISION,
            requester=requester,
            project=project,
            pool=pool,
            division_decider=second,
            gpus=hours // 10,
        )
        moment = factories.in_days(-hours / 24)
        ComputeRequest.objects.filter(pk=req.pk).update(
            stage_entered_at=moment, submitted_at=moment
        )
        built.append(req)
    return built


def _status(req):
    req.refresh_from_db()
    return req.status


def test_keyboard_shortcuts_and_a_bulk_decision(browse, division_lead, waiting):
    first, second, third, fourth, fifth = waiting
    b = browse(division_lead)
    page = b.page
    b.visit("/requests/inbox/", "inbox")
    rows = page.locator("tr[data-inbox-item]")

    # the shortcuts are announced on the page
    expect(page.locator("#inbox-keys")).to_contain_text("j next, k previous, a approve")

    # when j, j, k: the first row is the current one, and a screen reader hears which
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(rows.nth(1)).to_have_class(re.compile("is-current"))
    page.keyboard.press("k")
    expect(rows.nth(0)).to_have_class(re.compile("is-current"))
    expect(page.locator("#inbox-announce")).to_have_text(
        f"Request #{first.pk}, {first.project.name} (1 of 5)"
    )

    # and a approves it
    page.keyboard.press("a")
    expect(page.locator(".messages")).to_contain_text(
        f"#{first.pk} ({first.project.name}): approved."
    )
    b.shot("approved by keyboard")
    assert _status(first) == Status.APPROVED

    # when j then r: the reason is asked for first, then Enter rejects
    page.keyboard.press("j")
    page.keyboard.press("r")
    comment = page.locator(f"#comment-{second.pk}")
    expect(comment).to_be_focused()
    expect(page.locator("#inbox-announce")).to_contain_text("Write why you reject")
    comment.type("The pool is booked that week.")
    page.keyboard.press("Enter")
    expect(page.locator(".messages")).to_contain_text(
        f"#{second.pk} ({second.project.name}): rejected."
    )
    assert _status(second) == Status.REJECTED
    assert second.steps.get().comment == "The pool is booked that week."

    # when two are ticked and approved together with one comment
    page.get_by_label(f"Tick #{third.pk}").check()
    page.get_by_label(f"Tick #{fifth.pk}").check()
    page.get_by_label("Approve", exact=True).check()
    page.get_by_label("Comment for all").fill("Fits the plan.")
    page.get_by_role("button", name="Decide ticked requests").click()

    # then each has its own result, and only they were decided
    messages = page.locator(".messages")
    expect(messages).to_contain_text(f"#{third.pk} ({third.project.name}): approved.")
    expect(messages).to_contain_text(f"#{fifth.pk} ({fifth.project.name}): approved.")
    b.shot("bulk approved")
    assert [_status(r) for r in (third, fourth, fifth)] == [
        Status.APPROVED,
        Status.PENDING_DIVISION,
        Status.APPROVED,
    ]

    # when j then o: the request opens
    page.keyboard.press("j")
    page.keyboard.press("o")
    expect(page).to_have_url(re.compile(f"/requests/{fourth.pk}/$"))
    assert b.errors() == []


def test_every_field_of_an_inbox_item_is_visible_at_phone_width(browse, division_lead, waiting):
    # given
    b = browse(division_lead, PHONE)

    # when
    visit = b.visit("/requests/inbox/?sort=due", "inbox at phone width")

    # then
    assert visit.status == 200
    assert b.page.evaluate(CHECK_PAGE) == []
    assert b.page.evaluate(CHECK_COLUMNS) == []
    row = b.page.locator("tr[data-inbox-item]").first
    for words in ("Tick #", "For yourself", "Approve #", "Reject #"):
        expect(row.get_by_text(words).first).to_be_visible()
    assert b.errors() == []
