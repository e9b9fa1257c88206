"""The main journeys in a real browser against the live server, with a real Celery worker on the
same test database: rita files through the form, rlead and an executive approve, the worker
allocates, and the overview and the pool page show it; and what a viewer may not see is refused."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from allocator.models import Allocation
from requests_app.models import ComputeRequest
from tests import factories

pytestmark = pytest.mark.browser

JUSTIFICATION = {
    "Goal": "Pretrain the 70B model on the new data mix.",
    "Expected outcome or milestone": "A checkpoint that beats the baseline on the eval suite.",
    "Why this size and duration": "300 GPUs for two weeks is the compute-optimal budget.",
    "If it is not granted": "The release slips by a quarter.",
}


def _local(dt):
    return timezone.localtime(dt).strftime("%Y-%m-%dT%H:%M")


def _reload_until(b, status, seconds=30):
    """Reload the request page until its status reads `status` (the worker applies in the
    background)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if b.page.locator("main .pill").first.inner_text() == status:
            return True
        time.sleep(0.3)
        b.page.reload(wait_until="load")
    return False


@pytest.mark.worker
def test_large_request_filed_approved_twice_and_allocated(
    browse, celery_worker_process, requester, division_lead, executive, research, project
):
    # given a 512-GPU pool, and a Research share that covers 300 GPUs
    big = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=512)
    factories.DivisionShareFactory(division=research, pool=big, gpus=400)
    start = (timezone.now() + timedelta(minutes=3)).replace(second=0, microsecond=0)
    end = start + timedelta(days=14)

    # when rita signs in through the form, on her way to filing a request
    rita = browse(label="rita")
    rita.visit("/requests/new/", "sign-in redirect")
    assert "/accounts/login/" in rita.page.url
    rita.page.get_by_label("Username", exact=True).fill("rita")
    rita.page.get_by_label("Password", exact=True).fill("pw")
    rita.page.get_by_role("button", name="Sign in").click()
    expect(rita.page.get_by_role("heading", name="File a request")).to_be_visible()
    rita.shot("new request form")

    # and files 300 GPUs for two weeks and submits
    form = rita.page
    form.get_by_label("Project", exact=True).select_option(label="Atlas (Pretraining)")
    form.get_by_label("Pool", exact=True).select_option(label="west/H200")
    form.get_by_label("GPUs", exact=True).fill("300")
    form.get_by_label("Start (UTC)", exact=True).fill(_local(start))
    form.get_by_label("End (UTC)", exact=True).fill(_local(end))
    for label, text in JUSTIFICATION.items():
        form.get_by_label(label, exact=True).fill(text)
    rita.shot("new request form filled")
    form.get_by_role("button", name="Save and submit").click()

    # then her request page shows it waiting for division review, the reasons it also needs an
    # executive, and its duration
    expect(form.locator("main .pill").first).to_have_text("Pending division review")
    rita.shot("request submitted")
    req = ComputeRequest.objects.get()
    assert form.url.endswith(f"/requests/{req.pk}/")
    main = form.inner_text("main").replace("\xa0", " ")
    assert "Executive review is also needed because this request:" in main
    assert "Asks for 300 GPUs, at or above the 256-GPU large-request mark." in main
    assert f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} (2 weeks)" in main

    # when rlead finds it in her inbox and approves it
    lead = browse(division_lead)
    lead.visit("/requests/inbox/", "inbox")
    lead.page.get_by_role("link", name=f"#{req.pk}", exact=False).first.click()
    lead.page.wait_for_load_state()
    lead.shot("request to decide")
    lead.page.get_by_label("Comment", exact=True).fill("Fits Research's plan.")
    lead.page.get_by_role("button", name="Approve").click()

    # then it goes on to executive review
    expect(lead.page.locator("main .pill").first).to_have_text("Pending executive review")
    lead.shot("division approved")

    # when the executive approves it from his inbox
    boss = browse(executive)
    boss.visit("/requests/inbox/", "inbox")
    assert f"#{req.pk}" in boss.page.inner_text("main")
    boss.visit(f"/requests/{req.pk}/", "request to decide")
    boss.page.get_by_role("button", name="Approve").click()
    expect(boss.page.locator("main .pill").first).not_to_have_text("Pending executive review")
    boss.shot("executive approved")

    # then the worker allocates it: rita's page says so
    rita.visit(f"/requests/{req.pk}/", "request after approvals")
    assert _reload_until(rita, "Allocated"), celery_worker_process.log_path.read_text()[-3000:]
    allocation = Allocation.objects.get(pool=big)
    assert (allocation.gpus, allocation.project_id) == (300, project.pk)
    assert f"#{allocation.pk}" in rita.page.inner_text("main")
    rita.shot("request allocated")

    # and the overview lists it among her requests as allocated
    rita.visit("/", "overview")
    mine = rita.page.locator("section", has=rita.page.locator("#my-requests"))
    expect(mine).to_contain_text(f"#{req.pk}")
    expect(mine).to_contain_text("Allocated")

    # and the pool page lists the allocation
    rita.visit(f"/pools/{big.pk}/", "pool")
    row = rita.page.locator("tr", has_text=f"{allocation.pk}").filter(has_text="Atlas")
    expect(row).to_contain_text("300")

    for b in (rita, lead, boss):
        assert b.errors() == []


def test_form_mistakes_are_shown_inline_and_nothing_is_filed(browse, requester, project, pool):
    # given rita on the form
    rita = browse(requester)
    rita.visit("/requests/new/", "new request form")

    # when she submits it with a zero GPU count and an end before the start
    start = timezone.now() + timedelta(days=2)
    rita.page.get_by_label("Project", exact=True).select_option(label="Atlas (Pretraining)")
    rita.page.get_by_label("Pool", exact=True).select_option(label=pool.name)
    rita.page.get_by_label("GPUs", exact=True).fill("0")
    rita.page.get_by_label("Start (UTC)", exact=True).fill(_local(start))
    rita.page.get_by_label("End (UTC)", exact=True).fill(_local(start - timedelta(days=1)))
    rita.page.get_by_role("button", name="Save and submit").click()
    rita.page.wait_for_load_state()
    rita.shot("form with errors")

    # then the page says what is wrong, next to the fields, and nothing was filed
    expect(rita.page.get_by_role("alert")).to_contain_text("Please correct the errors below.")
    assert rita.page.locator(".field.has-error").count() >= 3
    assert "/requests/new/" in rita.page.url
    assert not ComputeRequest.objects.exists()
    assert rita.errors() == []


def test_wrong_password_is_refused_on_the_sign_in_page(browse, requester):
    # given the sign-in page
    anon = browse()
    anon.visit("/accounts/login/", "sign in")

    # when rita types a wrong password
    anon.page.get_by_label("Username", exact=True).fill("rita")
    anon.page.get_by_label("Password", exact=True).fill("not-her-password")
    anon.page.get_by_role("button", name="Sign in").click()
    anon.page.wait_for_load_state()
    anon.shot("sign in refused")

    # then she stays on the sign-in page with an error, and is not signed in
    expect(anon.page.get_by_role("alert")).to_be_visible()
    anon.visit("/requests/", "requests while signed out")
    assert "/accounts/login/" in anon.page.url


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("requester", "/ops/"),
        ("requester", "/balance/"),
        ("outsider", "/requests/{confidential}/"),
        ("division_lead", "/ops/"),
    ],
)
def test_what_a_viewer_may_not_see_is_a_404_page(
    request, browse, requester, outsider, team, pool, who, path
):
    # given a confidential project of rita's team with a request of hers
    secret = factories.ProjectFactory(team=team, name="Nightjar", confidential=True)
    req = factories.ComputeRequestFactory(project=secret, pool=pool, requester=requester)
    user = request.getfixturevalue(who)
    viewer = browse(user)

    # when the viewer opens the page
    visit = viewer.visit(path.format(confidential=req.pk), "page")

    # then it is the 404 page, in the app's layout, and says nothing about the project
    assert visit.status == 404
    expect(viewer.page.get_by_role("heading", level=1)).to_have_text("Page not found")
    assert "Nightjar" not in viewer.page.content()
    expect(viewer.page.get_by_role("navigation", name="Main")).to_be_attached()


def test_a_confidential_project_shows_an_outsider_only_that_it_is_confidential(
    browse, requester, outsider, team, pool
):
    # given a confidential project of rita's team with a request of hers
    secret = factories.ProjectFactory(team=team, name="Nightjar", confidential=True)
    factories.ComputeRequestFactory(
        project=secret, pool=pool, requester=requester, goal="Probe the secret model."
    )

    # when paul opens the project page
    paul = browse(outsider)
    visit = paul.visit(f"/projects/{secret.pk}/", "confidential project")

    # then he learns only that it is confidential: no requests, no justifications
    assert visit.status == 200
    expect(paul.page.locator("main")).to_contain_text("This project is confidential")
    assert "Probe the secret model." not in paul.page.content()
    assert paul.errors() == []
