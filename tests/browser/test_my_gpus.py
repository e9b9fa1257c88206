"""The researcher's "My GPUs" (issue 12): at the top of the overview, what their teams hold,
what starts when, and what waits with its expected start, readable at 375 px and 1280 px; and
the requests list's expected start visible on a phone. On the demo lab."""

import pytest
from playwright.sync_api import expect

from devtools.demo import load_demo, load_demo_requests
from requests_app.models import ComputeRequest
from tests.browser.conftest import DESKTOP, PHONE

pytestmark = pytest.mark.browser


@pytest.fixture
def demo_lab(transactional_db, settings):
    settings.ALLOTMENT = {**settings.ALLOTMENT, "DEMO": True}
    data = load_demo()
    load_demo_requests(data)
    return data


def _demo(tag):
    return ComputeRequest.objects.get(goal__startswith=f"[demo] {tag}:")


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_my_gpus_leads_the_overview_with_what_i_hold_and_when_i_get_the_rest(
    browse, demo_lab, viewport
):
    # given rita, whose teams hold GPUs and have two requests waiting on central/A100
    big, late = _demo("waiting"), _demo("waiting-late")
    b = browse(demo_lab["users"]["rita"], viewport)

    # when she opens the overview
    b.visit("/", "overview")
    page = b.page

    # then "My GPUs" is the first thing on the page, inside the first screen
    section = page.locator("#my-gpus")
    expect(section.get_by_role("heading", name="My GPUs")).to_be_in_viewport()
    box = section.bounding_box()
    assert box["y"] < viewport["height"] / 2
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    # what her teams hold or have scheduled
    expect(section).to_contain_text("512 × east/H100 for Atlas")
    expect(section).to_contain_text("8 × central/A100 for Atlas, from")
    # what waits, and when it is expected to start, in numbers
    waiting = section.locator("li", has_text=f"#{late.pk}")
    expect(waiting).to_contain_text("196 × central/A100 for Compass: expected start")
    expect(waiting).to_contain_text("(6 of its 24 days)")
    expect(waiting).to_be_visible()
    expect(section.locator("li", has_text=f"#{big.pk}")).to_contain_text(
        "200 × central/A100 for Compass: not within the horizon"
    )
    b.shot("my gpus")
    assert b.errors() == []


def test_the_requests_list_shows_the_expected_start_on_a_phone(browse, demo_lab):
    late = _demo("waiting-late")
    b = browse(demo_lab["users"]["rita"], PHONE)
    b.visit("/requests/?mine=1", "my requests")
    row = b.page.locator("tr", has_text=f"#{late.pk}")
    cell = row.locator('td[data-label="Expected start"]')
    expect(cell).to_be_visible()
    expect(cell).to_contain_text("6 of 24 days")
    box = cell.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]


def test_a_waiting_request_says_at_the_top_when_it_starts_and_why(browse, demo_lab):
    late = _demo("waiting-late")
    b = browse(demo_lab["users"]["rita"], PHONE)
    b.visit(f"/requests/{late.pk}/", "waiting request")
    top = b.page.locator("section.forecast")
    expect(top).to_be_in_viewport()
    expect(top).to_contain_text("Expected start:")
    expect(top).to_contain_text("Late start: 6 of its 24 days.")
    expect(top).to_contain_text("18 days late: 6 of its 24 days")
    expect(top).to_contain_text("196 GPUs")
