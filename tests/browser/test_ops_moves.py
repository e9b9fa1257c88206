"""Compute ops move GPUs in the browser without reading an id (issue 14): pick the waiting
request and the winding-down project's allocation, preview, confirm; see the pending reclaim on
the pool's timeline; cancel another. A team gives back half an allocation after confirming. The
new pages keep every column readable at phone width."""

import re

import pytest
from playwright.sync_api import expect

from allocator import services
from allocator.models import Allocation, Reclaim
from tests import factories
from tests.browser.conftest import DESKTOP, PHONE
from tests.browser.test_layout import CHECK_COLUMNS, CHECK_PAGE
from tests.factories import in_days

pytestmark = pytest.mark.browser

INTERNAL_ID = re.compile(r"(?:allocation|change) #\d+", re.I)


@pytest.fixture
def lab(transactional_db, team, requester, ops, research):
    pool = factories.PoolFactory(cluster="east", gpu_model="H100", capacity=128)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=128)
    sunset = factories.ProjectFactory(
        team=team, name="Sunset", state="winding_down", expected_end=in_days(5).date()
    )
    busy = factories.ProjectFactory(team=team, name="Busy")
    atlas = factories.ProjectFactory(team=team, name="Atlas")
    winding = factories.AllocationFactory(pool=pool, project=sunset, gpus=64, end=in_days(40))
    other = factories.AllocationFactory(pool=pool, project=busy, gpus=64, end=in_days(40))
    change = factories.AllocationChangeFactory(
        pool=pool, project=atlas, gpus=64, start=in_days(1), end=in_days(20), requested_by=requester
    )
    services.allocation_change_apply(change_id=change.pk)
    change.refresh_from_db()
    assert change.status == "waiting"
    waiting = factories.ComputeRequestFactory(
        project=atlas, pool=pool, requester=requester, change=change, status="waiting", gpus=64
    )
    # another reclaim already scheduled, which compute ops will call off
    services.allocation_reclaim(allocation_id=other.pk, actor=ops, new_gpus=32, reason="Room.")
    return {"pool": pool, "winding": winding, "other": other, "waiting": waiting}


def _no_ids(page) -> None:
    text = page.inner_text("main")
    assert not INTERNAL_ID.findall(text), INTERNAL_ID.findall(text)


def test_ops_move_64_gpus_to_a_waiting_request_and_cancel_another(browse, lab, ops):
    b = browse(ops, DESKTOP)
    page = b.page
    req = lab["waiting"]
    # given the ops console
    b.visit("/ops/", "ops console")
    _no_ids(page)
    # when compute ops start a move and pick the waiting request by its number
    page.get_by_role("link", name="Move GPUs").first.click()
    page.get_by_label("Destination").select_option(str(req.pk))
    expect(page.locator("#move-to option:checked")).to_contain_text(f"Request #{req.pk}")
    page.get_by_role("button", name="Show allocations").click()
    _no_ids(page)
    # and take the winding-down project's 64 GPUs (listed first)
    first_row = page.locator("main table tbody tr").first
    expect(first_row).to_contain_text("Sunset")
    expect(first_row).to_contain_text("Winding down")
    page.get_by_label("GPUs to take from Sunset's 64 GPUs of east/H100").fill("64")
    page.get_by_label("Reason (the owners read it)").fill("Sunset is ending; Atlas waits.")
    page.get_by_role("button", name="Preview the move").click()
    # then the effect is shown on both sides and on the queue, and nothing happened yet
    effect = page.locator("#effect")
    expect(effect).to_contain_text("nothing has happened yet")
    expect(effect).to_contain_text("Sunset (east/H100): gives 64 of its 64 GPUs, keeps 0")
    expect(effect).to_contain_text(f"Request #{req.pk} of Atlas asks 64 GPUs")
    expect(effect).to_contain_text("1 request waiting")
    b.shot("move preview")
    _no_ids(page)
    assert not Reclaim.objects.filter(allocation=lab["winding"]).exists()
    # when they confirm
    page.get_by_role("button", name="Confirm: move 64 GPUs").click()
    expect(page.locator("body")).to_contain_text(f"64 GPUs move to request #{req.pk} of Atlas")
    _no_ids(page)
    # then the console lists both scheduled reclaims in words
    scheduled = page.locator("section[aria-labelledby=scheduled-title]")
    expect(scheduled).to_contain_text("all 64 GPUs go back (to request")
    expect(scheduled).to_contain_text("32 of its 64 GPUs go back (to the pool)")
    # and the pool's timeline draws the pending reclaim ahead of time
    b.visit(f"/pools/{lab['pool'].pk}/", "pool with a pending reclaim")
    expect(page.locator("svg text", has_text="Reclaim scheduled · Sunset −64")).to_have_count(1)
    # when they cancel the other one from the console
    b.visit("/ops/", "ops console with reclaims")
    page.get_by_role("button", name="Cancel the reclaim of Busy's GPUs of east/H100").click()
    expect(page.locator("body")).to_contain_text("Reclaim cancelled")
    expect(scheduled).not_to_contain_text("32 of its 64 GPUs go back")
    assert Reclaim.objects.get(allocation=lab["other"]).status == "cancelled"
    assert b.errors() == []


def test_team_releases_half_an_allocation_after_confirming(browse, lab, requester):
    b = browse(requester, DESKTOP)
    page = b.page
    atlas_alloc = factories.AllocationFactory(
        pool=lab["pool"], project=lab["waiting"].project, gpus=32, start=in_days(-1)
    )
    b.visit(f"/projects/{atlas_alloc.project_id}/", "project page")
    page.get_by_role("link", name="Release 32 GPUs of east/H100").click()
    # a confirmation step: nothing is released yet
    expect(page.locator("h1")).to_have_text("Release GPUs")
    assert Allocation.objects.get(pk=atlas_alloc.pk).gpus == 32
    page.get_by_label("Some GPUs, from now on").check()
    page.get_by_label("GPUs to give back").fill("16")
    page.get_by_role("button", name="Confirm the release").click()
    expect(page.locator("body")).to_contain_text("16 GPUs given back")
    atlas_alloc.refresh_from_db()
    assert atlas_alloc.gpus == 16 and atlas_alloc.state == "active"
    assert b.errors() == []


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_new_pages_show_every_column(browse, lab, ops, requester, viewport):
    problems = []
    pages = [
        (ops, f"/ops/move/?to={lab['waiting'].pk}", "move"),
        (ops, f"/ops/reclaims/{Reclaim.objects.get().pk}/", "scheduled reclaim"),
        (ops, f"/ops/projects/{lab['winding'].project_id}/wind-down/", "wind down"),
        (ops, "/ops/", "ops console"),
        (ops, f"/pools/{lab['pool'].pk}/", "pool"),
        (requester, f"/projects/{lab['other'].project_id}/", "project"),
        (requester, f"/allocations/{lab['other'].pk}/release/", "release"),
    ]
    sessions = {}
    for user, path, name in pages:
        b = sessions.setdefault(user.pk, browse(user, viewport))
        visit = b.visit(path, name)
        if visit.status != 200:
            problems.append(f"{name}: status {visit.status}")
        problems += [f"{name}: {p}" for p in b.page.evaluate(CHECK_PAGE)]
        problems += [f"{name}: {p}" for p in b.page.evaluate(CHECK_COLUMNS)]
    for b in sessions.values():
        problems += b.errors()
    assert problems == [], "\n".join(problems)
