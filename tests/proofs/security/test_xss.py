"""B2 (PROOFS.md 2.4): stored XSS. Script-bearing text is stored in every free-text field a page
shows (justification, decision comments, division, team, project and pool names, descriptions,
capacity-change notes, reclaim reasons, notifications, audit messages), partly through the API,
then every HTML page that renders it is fetched, the admin's change lists included. Each page
must show the text escaped, never raw, and send a strict Content-Security-Policy with the usual
hardening headers."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from allocator.models import Reclaim
from audit.services import audit_record
from notifications.models import Notification
from org.models import RoleGrant
from requests_app.models import ApprovalStep
from requests_app.workflow import Stage, Status
from tests import factories
from tests.support import figures

from .conftest import build_request, count_5xx

# Each payload carries its own marker so a raw reflection is found whatever field it came from.
PAYLOADS = [
    '<script>alert("x1")</script>',
    '"><img src=x onerror=alert("x2")>',
    "'><svg onload=alert('x3')>",
    '</textarea><svg onload=alert("x4")>',
    "<iframe src=\"javascript:alert('x5')\"></iframe>",
    "<a href=\"javascript:alert('x6')\">x6</a>",
    "<style>@import 'x7.css'</style>",
    '<body onload=alert("x8")>',
]
TEMPLATE_ISH = "{{7*7}}{% debug %}x9"


def p(i: int) -> str:
    return PAYLOADS[i % len(PAYLOADS)]


@pytest.fixture
def xss_world(api, research, applications, requester, division_lead, executive, ops, admin_user):
    research.name = f"Research {p(0)}"
    research.description = p(1)
    research.save()
    team = factories.TeamFactory(division=research, name=f"Team {p(2)}", slug="xss-team")
    factories.MembershipFactory(team=team, user=requester)
    pool = factories.PoolFactory(
        cluster=f"c{p(3)}"[:60], gpu_model=f"g{p(0)}"[:60], capacity=64, description=p(4)
    )
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    # A project through the API, as a user would store it.
    response = api(requester).post(
        "/api/v1/projects/",
        {"name": f"Proj {p(1)}", "team": team.pk, "description": p(5) + TEMPLATE_ISH},
        format="json",
    )
    assert response.status_code == 201, response.content
    from org.models import Project

    project = Project.objects.get(pk=response.json()["id"])
    second = factories.UserFactory(username="rlead-xss")
    factories.RoleGrantFactory(user=second, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    # A request through the API with every justification field script-bearing.
    body = {
        "project": project.pk,
        "pool": pool.pk,
        "gpus": 8,
        "start": factories.in_days(2).isoformat(),
        "end": factories.in_days(9).isoformat(),
        "goal": p(0) + TEMPLATE_ISH,
        "expected_outcome": p(1),
        "size_rationale": p(2),
        "impact_if_denied": p(3),
    }
    created = api(requester).post("/api/v1/requests/", body, format="json")
    assert created.status_code == 201, created.content
    req_id = created.json()["id"]
    assert api(requester).post(f"/api/v1/requests/{req_id}/submit/").status_code == 200
    # Another one sent back with a script-bearing comment, one allocated (for pool/ops pages).
    sent_back = build_request(
        Status.CHANGES_REQUESTED,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=second,
        goal=p(4),
    )
    ApprovalStep.objects.filter(request=sent_back).update(comment=p(6))
    allocated = build_request(
        Status.ALLOCATED,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=second,
        goal=p(5),
    )
    failed = build_request(
        Status.FAILED, requester=requester, project=project, pool=pool, division_decider=second
    )
    failed.change.last_error = p(7)
    failed.change.save()
    # Capacity change with a script-bearing note through the API.
    cap = api(ops).post(
        "/api/v1/capacity-changes/",
        {
            "pool": pool.pk,
            "kind": "arrival",
            "delta": 8,
            "effective_at": factories.in_days(3).isoformat(),
            "note": p(7),
        },
        format="json",
    )
    assert cap.status_code == 201, cap.content
    allocation = allocated.change.allocation
    Reclaim.objects.create(
        allocation=allocation,
        new_gpus=4,
        new_end=allocation.end,
        effective_at=factories.in_days(3),
        reason=p(2),
        created_by=ops,
    )
    Notification.objects.create(recipient=requester, kind="decided", message=p(3), link="/")
    audit_record(actor=requester, action="note", obj=project, message=p(4))
    return {
        "request": req_id,
        "sent_back": sent_back.pk,
        "project": project.pk,
        "pool": pool.pk,
        "requester": requester,
        "lead": division_lead,
        "executive": executive,
        "ops": ops,
        "admin": admin_user,
    }


PAGES = [
    ("executive", lambda w: reverse("overview")),
    ("requester", lambda w: reverse("overview")),
    ("executive", lambda w: reverse("requests:list")),
    ("executive", lambda w: reverse("requests:detail", args=[w["request"]])),
    ("requester", lambda w: reverse("requests:detail", args=[w["sent_back"]])),
    ("requester", lambda w: reverse("requests:edit", args=[w["sent_back"]])),
    ("requester", lambda w: reverse("requests:create")),
    ("lead", lambda w: reverse("requests:inbox")),
    ("executive", lambda w: reverse("org:project-list")),
    ("executive", lambda w: reverse("org:project-detail", args=[w["project"]])),
    ("executive", lambda w: reverse("allocator:pool-list")),
    ("executive", lambda w: reverse("allocator:pool-detail", args=[w["pool"]])),
    ("ops", lambda w: reverse("allocator:ops")),
    ("executive", lambda w: reverse("allocator:balance")),
    ("requester", lambda w: reverse("notifications:list")),
    ("admin", lambda w: "/admin/"),
    ("admin", lambda w: "/admin/requests_app/computerequest/"),
    ("admin", lambda w: f"/admin/requests_app/computerequest/{w['request']}/change/"),
    ("admin", lambda w: "/admin/requests_app/approvalstep/"),
    ("admin", lambda w: "/admin/org/division/"),
    ("admin", lambda w: "/admin/org/team/"),
    ("admin", lambda w: "/admin/org/project/"),
    ("admin", lambda w: f"/admin/org/project/{w['project']}/change/"),
    ("admin", lambda w: "/admin/allocator/pool/"),
    ("admin", lambda w: "/admin/allocator/capacitychange/"),
    ("admin", lambda w: "/admin/allocator/allocationchange/"),
    ("admin", lambda w: "/admin/allocator/reclaim/"),
    ("admin", lambda w: "/admin/audit/auditevent/"),
    ("admin", lambda w: "/admin/notifications/notification/"),
    (None, lambda w: reverse("login")),
]


def check_headers(response) -> list[str]:
    problems = []
    csp = response.get("Content-Security-Policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";") if d.strip()}
    script_src = directives.get("script-src", directives.get("default-src", ""))
    if not csp or not script_src:
        problems.append("no CSP")
    elif "unsafe-inline" in script_src or "unsafe-eval" in script_src:
        problems.append(f"weak script-src: {script_src}")
    elif "frame-ancestors 'none'" not in csp:
        problems.append("no frame-ancestors")
    if response.get("X-Content-Type-Options") != "nosniff":
        problems.append("no nosniff")
    if response.get("X-Frame-Options") != "DENY":
        problems.append("no X-Frame-Options")
    if not response.get("Referrer-Policy"):
        problems.append("no Referrer-Policy")
    return problems


def raw_reflections(page: str) -> list[str]:
    found = [payload for payload in PAYLOADS if payload in page]
    lowered = page.lower()
    for dangerous in (
        'href="javascript:',
        "href='javascript:",
        'src="javascript:',
        "<img src=x",
        "<svg onload",
        "<body onload",
        "<script>alert",
        "<style>@import",
    ):
        if dangerous in lowered:
            found.append(dangerous)
    if "49x9" in page:
        found.append("template evaluated")
    return found


@pytest.mark.parametrize("index", range(len(PAGES)))
def test_pages_escape_stored_script_and_send_csp(client, xss_world, index):
    # given payloads stored everywhere (fixture) and a user who may see the page
    actor, url_of = PAGES[index]
    if actor:
        client.force_login(xss_world[actor])
    url = url_of(xss_world)
    # when
    response = client.get(url)
    # then
    count_5xx(response)
    assert response.status_code == 200, (url, response.status_code)
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    raw = raw_reflections(page)
    escaped = [payload for payload in PAYLOADS if html.escape(payload) in page]
    figures.add("XSS payload x page checks", len(PAYLOADS))
    figures.add("unescaped XSS reflections", len(raw))
    problems = check_headers(response)
    if any("CSP" in problem or "script-src" in problem for problem in problems):
        figures.add("HTML pages without CSP")
    figures.add("HTML pages checked for CSP")
    assert not raw, f"{url} reflects {raw}"
    assert not problems, f"{url}: {problems}"
    if actor is not None and url not in ("/admin/",):
        assert escaped, f"{url} shows none of the stored text; the check would be vacuous"


def test_json_endpoints_answer_json(api, xss_world):
    client = api(xss_world["executive"])
    for url in [
        f"/api/v1/requests/{xss_world['request']}/",
        "/api/v1/projects/",
        "/api/v1/capacity-changes/",
        "/api/v1/audit/",
    ]:
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        assert response.get("X-Content-Type-Options") == "nosniff"


def test_no_stage_step_is_decided_by_the_payload_world(xss_world):
    """The fixture's steps are as built: only the division stage was decided."""
    assert not ApprovalStep.objects.filter(stage=Stage.EXECUTIVE).exists()
