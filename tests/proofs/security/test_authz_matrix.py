"""A1-A3 (PROOFS.md 2.5): the authorization matrix, separation of duties, confidential projects
and BOLA.

The expected outcome of every cell is written by hand below from PRODUCT.md section 1 (who may do
what), section 2 (confidential projects) and section 3 (states), NOT read from
requests_app/policies.py. Conventions (PRODUCT.md section 1): what a user may not see answers 404;
what they see but may not do, 403 with the reason; a move the request's state does not allow, 409;
anonymous callers 401 or 403. Two choices this table pins: a draft is the team's own working
copy, seen only by the project's team; and a Django admin (superuser) holds no product role, so
sees what any signed-in user without a role sees, and nothing of a confidential project.

Every cell runs in a savepoint that is rolled back, so each starts from the same world; a denied
cell must leave the business tables exactly as they were."""

from __future__ import annotations

import contextlib
import logging

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from audit.services import audit_record
from org.models import RoleGrant
from requests_app.workflow import Status
from tests import factories
from tests.support import figures

from .conftest import build_request, business_state, count_5xx, state_diff, valid_request_body

ANON = "anon"  # 401 or 403
STATES = [
    "draft",
    "pending_division",
    "pending_executive",
    "changes_requested",
    "approved",
    "allocated",
    "waiting",
    "rejected",
    "withdrawn",
    "failed",
]
EDITABLE = ("draft", "changes_requested")
WITHDRAWABLE = ("draft", "pending_division", "pending_executive", "changes_requested")
ACTORS = [
    "anonymous",
    "requester",  # filed the request; member of the project's team (Research)
    "teammate",  # same team, did not file it
    "outsider",  # researcher of another team, in another division
    "own_lead",  # lead of the request's division (Research)
    "other_lead",  # lead of another division
    "executive",
    "exec_requester",  # an executive on the team who filed *their own* request
    "ops",  # compute ops
    "admin",  # superuser, no product role
    "lead_delegate",  # no role of their own; own_lead's delegate for Research's division review
    "exec_delegate",  # no role of their own; the executive's delegate for the executive review
    "expired_delegate",  # was the executive's delegate until yesterday
]

# --- The hand-written table. Values: a status code for every state, or {state(s): code, "*": code}.
_decide = {
    "anonymous": ANON,
    "requester": 403,
    "teammate": 403,
    "outsider": {"draft": 404, "*": 403},
    "own_lead": {"draft": 404, "pending_division": 200, "pending_executive": 403, "*": 409},
    "other_lead": {"draft": 404, "*": 403},
    # Executives decide the executive stage only: no skipping the division review.
    "executive": {"draft": 404, "pending_division": 403, "pending_executive": 200, "*": 409},
    # Nobody decides a stage of their own request.
    "exec_requester": {("pending_division", "pending_executive"): 403, "*": 409},
    "ops": {"draft": 404, "*": 403},
    "admin": {"draft": 404, "*": 403},
    # A delegate decides the delegator's stage, and only that one; a delegation that ended
    # lends nothing.
    "lead_delegate": {"draft": 404, "pending_division": 200, "pending_executive": 403, "*": 409},
    "exec_delegate": {"draft": 404, "pending_division": 403, "pending_executive": 200, "*": 409},
    "expired_delegate": {"draft": 404, "*": 403},
}
_DELEGATES = ("lead_delegate", "exec_delegate", "expired_delegate")
_edit = {
    "anonymous": ANON,
    "requester": {EDITABLE: 200, "*": 409},
    "teammate": 403,
    "outsider": {"draft": 404, "*": 403},
    "own_lead": {"draft": 404, "*": 403},
    "other_lead": {"draft": 404, "*": 403},
    "executive": {"draft": 404, "*": 403},
    "exec_requester": {EDITABLE: 200, "*": 409},
    "ops": {"draft": 404, "*": 403},
    "admin": {"draft": 404, "*": 403},
    **{d: {"draft": 404, "*": 403} for d in _DELEGATES},
}
_visible = {
    "anonymous": ANON,
    "requester": 200,
    "teammate": 200,
    "outsider": {"draft": 404, "*": 200},
    "own_lead": {"draft": 404, "*": 200},
    "other_lead": {"draft": 404, "*": 200},
    "executive": {"draft": 404, "*": 200},
    "exec_requester": 200,
    "ops": {"draft": 404, "*": 200},
    "admin": {"draft": 404, "*": 200},
    **{d: {"draft": 404, "*": 200} for d in _DELEGATES},
}
_team_only = {
    "anonymous": ANON,
    "requester": 200,
    "teammate": 200,
    "exec_requester": 200,
    "*": 403,
}
EXPECTED = {
    "list": {"anonymous": ANON, "*": 200},
    "retrieve": _visible,
    "create": {
        "anonymous": ANON,
        "requester": 201,
        "teammate": 201,
        "exec_requester": 201,
        # A project of somebody else's team is a bad `project` value, answered per field.
        "*": 400,
    },
    "update": _edit,
    "submit": _edit,
    "withdraw": {
        **_edit,
        "requester": {WITHDRAWABLE: 200, "*": 409},
        "exec_requester": {WITHDRAWABLE: 200, "*": 409},
    },
    "approve": _decide,
    "reject": _decide,
    "request-changes": _decide,
    "release allocation": _team_only,
    "reclaim": {"anonymous": ANON, "ops": 201, "*": 403},
    "capacity change": {"anonymous": ANON, "ops": 201, "*": 403},
    "share update": {"anonymous": ANON, "executive": 200, "exec_requester": 200, "*": 403},
    "view audit": {"anonymous": ANON, "*": 200},
}
# Whether the request shows up in lists and in the audit trail for that actor.
LISTED = {
    "list": _visible,
    # Executives and compute ops read the whole audit trail; others, Django admins included, the
    # events of the requests they may see.
    "view audit": {**_visible, "executive": 200, "ops": 200},
}


def expected(table: dict, actor: str, state: str):
    value = table.get(actor, table.get("*"))
    if isinstance(value, dict):
        for key, code in value.items():
            if key == state or (isinstance(key, tuple) and state in key):
                return code
        return value["*"]
    return value


# --- The world ---


class Rollback(Exception):
    pass


@pytest.fixture
def matrix_world(research, applications, team, other_team, project, pool, ops, admin_user):
    users = {
        "requester": factories.UserFactory(username="rita"),
        "teammate": factories.UserFactory(username="tom"),
        "outsider": factories.UserFactory(username="paul"),
        "own_lead": factories.UserFactory(username="rlead"),
        "other_lead": factories.UserFactory(username="alead"),
        "executive": factories.UserFactory(username="exec"),
        "exec_requester": factories.UserFactory(username="exec-rita"),
        "ops": ops,
        "admin": admin_user,
    }
    for name in ("requester", "teammate", "exec_requester"):
        factories.MembershipFactory(team=team, user=users[name])
    factories.MembershipFactory(team=other_team, user=users["outsider"])
    lead, exec_ = RoleGrant.Role.DIVISION_LEAD, RoleGrant.Role.EXECUTIVE
    factories.RoleGrantFactory(user=users["own_lead"], role=lead, division=research)
    factories.RoleGrantFactory(user=users["other_lead"], role=lead, division=applications)
    factories.RoleGrantFactory(user=users["executive"], role=exec_)
    factories.RoleGrantFactory(user=users["exec_requester"], role=exec_)
    for name in _DELEGATES:
        users[name] = factories.UserFactory(username=name.replace("_", "-"))
    factories.DelegationFactory(
        delegator=users["own_lead"],
        delegate=users["lead_delegate"],
        role="division_lead",
        division=research,
    )
    factories.DelegationFactory(delegator=users["executive"], delegate=users["exec_delegate"])
    factories.DelegationFactory(
        delegator=users["executive"],
        delegate=users["expired_delegate"],
        starts_at=factories.in_days(-8),
        ends_at=factories.in_days(-1),
    )
    second_lead = factories.UserFactory(username="rlead2")
    factories.RoleGrantFactory(user=second_lead, role=lead, division=research)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=48)
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=8)
    return {
        "users": users,
        "project": project,
        "pool": pool,
        "division": research,
        "allocation": allocation,
        "second_lead": second_lead,
    }


def _requests_in(world, state):
    made = {}
    for who in ("requester", "exec_requester"):
        req = build_request(
            state,
            requester=world["users"][who],
            project=world["project"],
            pool=world["pool"],
            division_decider=world["second_lead"],
        )
        audit_record(actor=world["users"][who], action="request.create", obj=req)
        made[who] = req
    return made


def _call(client, action, world, req):
    rid = req.pk
    alloc = world["allocation"].pk
    if action == "list":
        return client.get("/api/v1/requests/?page_size=200")
    if action == "retrieve":
        return client.get(f"/api/v1/requests/{rid}/")
    if action == "create":
        body = valid_request_body(world["project"], world["pool"])
        return client.post("/api/v1/requests/", body, format="json")
    if action == "update":
        return client.patch(f"/api/v1/requests/{rid}/", {"gpus": 4}, format="json")
    if action in ("submit", "withdraw"):
        return client.post(f"/api/v1/requests/{rid}/{action}/", {}, format="json")
    if action in ("approve", "reject", "request-changes"):
        return client.post(f"/api/v1/requests/{rid}/{action}/", {"comment": "ok"}, format="json")
    if action == "release allocation":
        return client.post(f"/api/v1/allocations/{alloc}/release/", {}, format="json")
    if action == "reclaim":
        body = {"new_gpus": 4, "reason": "Needed elsewhere.", "notice": 72}
        return client.post(f"/api/v1/allocations/{alloc}/reclaim/", body, format="json")
    if action == "capacity change":
        body = {
            "pool": world["pool"].pk,
            "kind": "arrival",
            "delta": 8,
            "effective_at": factories.in_days(5).isoformat(),
            "note": "rack",
        }
        return client.post("/api/v1/capacity-changes/", body, format="json")
    if action == "share update":
        body = {"pool": world["pool"].pk, "gpus": 40}
        return client.post(f"/api/v1/divisions/{world['division'].pk}/share/", body, format="json")
    if action == "view audit":
        return client.get(f"/api/v1/audit/?object_type=requests_app.computerequest&object_id={rid}")
    raise AssertionError(action)


def _matches(code, want) -> bool:
    if want == ANON:
        return code in (401, 403)
    return code == want


def _listed(response, action, req) -> bool:
    results = response.json()["results"]
    if action == "list":
        return any(item["id"] == req.pk for item in results)
    return any(item["object_id"] == req.pk for item in results)


@pytest.mark.parametrize("state", STATES)
def test_api_authorization_matrix(matrix_world, state, caplog):
    # given one request of the team in `state`, and one the executive-researcher filed
    reqs = _requests_in(matrix_world, state)
    mismatches = []
    caplog.set_level(logging.INFO, logger="security")
    for actor in ACTORS:
        user = matrix_world["users"].get(actor)
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        target = reqs["exec_requester" if actor == "exec_requester" else "requester"]
        for action, table in EXPECTED.items():
            want = expected(table, actor, state)
            # when, in a savepoint rolled back afterwards
            logged_before = len(caplog.records)
            with contextlib.suppress(Rollback), transaction.atomic():
                before = business_state() if want not in (200, 201) else None
                response = _call(client, action, matrix_world, target)
                after = business_state() if before is not None else None
                raise Rollback
            # then
            figures.add("authorization cells checked")
            count_5xx(response)
            code = response.status_code
            cell = f"{actor} {action} on {state}: got {code}, want {want}"
            if not _matches(code, want):
                mismatches.append(cell)
                if 200 <= code < 300:
                    figures.add("unexpected allows")
                elif want in (200, 201):
                    figures.add("unexpected denies")
                else:
                    figures.add("authorization wrong denial code")
            if code == 403 and user is not None:
                assert response.json()["detail"], f"{cell}: a 403 says why"
            _check_security_log(code, caplog.records[logged_before:], cell, mismatches)
            if before is not None and state_diff(before, after):
                figures.add("state changes caused by rejected input")
                mismatches.append(f"{cell}: denied but changed {state_diff(before, after)}")
            if action in LISTED and code == 200:
                should = expected(LISTED[action], actor, state) == 200
                if _listed(response, action, target) != should:
                    figures.add("BOLA leaks" if not should else "unexpected denies")
                    mismatches.append(f"{cell}: listed={not should}, want {should}")
    assert not mismatches, "\n".join(mismatches)


def _check_security_log(code, records, cell, mismatches) -> None:
    """A1 / ASVS 7.2.2: every denial (401/403/404) leaves one `security` entry."""
    figures.add("denied actions without security-log entry", 0)
    if code not in (401, 403, 404):
        return
    figures.add("denials checked for a security-log entry")
    entries = [r for r in records if r.name == "security"]
    if len(entries) != 1 or entries[0].security_event["status"] != code:
        figures.add("denied actions without security-log entry")
        mismatches.append(f"{cell}: {len(entries)} security-log entries, want 1")


# --- Pages: the same rules through the HTML views ---

PAGE_ACTIONS = ["retrieve", "update", "submit", "withdraw", "approve", "reject", "request-changes"]


def _page_call(client, action, req):
    rid = req.pk
    if action == "retrieve":
        return client.get(f"/requests/{rid}/")
    if action == "update":
        return client.get(f"/requests/{rid}/edit/")
    if action in ("submit", "withdraw"):
        return client.post(f"/requests/{rid}/{action}/", {})
    decision = {"approve": "approve", "reject": "reject", "request-changes": "request_changes"}
    return client.post(f"/requests/{rid}/decide/", {"action": decision[action], "comment": "c"})


def _page_expectation(api_code, action):
    """The pages answer a refused state change by going back to the request with a message (302,
    nothing changed) and a done one by going back to it too (302, changed)."""
    if api_code == ANON:
        return 302, False  # to the sign-in page
    if api_code in (403, 404):
        return api_code, False
    if action in ("retrieve", "update"):
        return (200, False) if api_code == 200 else (302, False)
    return 302, api_code == 200


@pytest.mark.parametrize("state", STATES)
def test_page_authorization_matrix(client, matrix_world, state, caplog):
    reqs = _requests_in(matrix_world, state)
    mismatches = []
    caplog.set_level(logging.INFO, logger="security")
    for actor in ACTORS:
        user = matrix_world["users"].get(actor)
        client.logout()
        if user is not None:
            client.force_login(user)
        target = reqs["exec_requester" if actor == "exec_requester" else "requester"]
        for action in PAGE_ACTIONS:
            want_code, want_change = _page_expectation(
                expected(EXPECTED[action], actor, state), action
            )
            logged_before = len(caplog.records)
            with contextlib.suppress(Rollback), transaction.atomic():
                before = business_state()
                response = _page_call(client, action, target)
                changed = state_diff(before, business_state())
                raise Rollback
            figures.add("authorization cells checked")
            count_5xx(response)
            code = response.status_code
            cell = f"page {actor} {action} on {state}: got {code}, want {want_code}"
            _check_security_log(code, caplog.records[logged_before:], cell, mismatches)
            if code != want_code:
                mismatches.append(cell)
                figures.add("unexpected allows" if code in (200, 302) else "unexpected denies")
            elif bool(changed) != want_change:
                mismatches.append(f"{cell}: changed={changed}, want change={want_change}")
                figures.add("unexpected allows" if changed else "unexpected denies")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize(
    ("url", "method", "allowed"),
    [
        ("/ops/", "get", "ops"),
        ("/balance/", "get", "executive"),
        ("/ops/capacity/", "post", "ops"),
        ("/ops/move/", "post", "ops"),
        ("/balance/", "post", "executive"),
    ],
)
def test_role_pages_are_hidden_from_everyone_else(client, matrix_world, url, method, allowed):
    for actor in ACTORS[1:]:
        client.force_login(matrix_world["users"][actor])
        before = business_state()
        response = getattr(client, method)(url, {})
        figures.add("authorization cells checked")
        count_5xx(response)
        may = actor == allowed or (allowed == "executive" and actor == "exec_requester")
        if may:
            assert response.status_code in (200, 400), (actor, url, response.status_code)
        else:
            if response.status_code != 404:
                figures.add("unexpected allows")
            assert response.status_code == 404, (actor, url, response.status_code)
            assert not state_diff(before, business_state())


# --- A2: separation of duties and no stage skipping ---


def test_separation_of_duties(api, matrix_world):
    users = matrix_world["users"]
    world = matrix_world
    # given a lead who is also the requester, and an executive who is also a lead
    lead_requester = factories.UserFactory(username="lead-rita")
    factories.MembershipFactory(team=world["project"].team, user=lead_requester)
    factories.RoleGrantFactory(
        user=lead_requester, role=RoleGrant.Role.DIVISION_LEAD, division=world["division"]
    )
    factories.RoleGrantFactory(user=lead_requester, role=RoleGrant.Role.EXECUTIVE)
    exec_lead = factories.UserFactory(username="exec-lead")
    factories.RoleGrantFactory(user=exec_lead, role=RoleGrant.Role.EXECUTIVE)
    factories.RoleGrantFactory(
        user=exec_lead, role=RoleGrant.Role.DIVISION_LEAD, division=world["division"]
    )
    violations = []

    def attempt(user, req, action, want):
        response = api(user).post(f"/api/v1/requests/{req.pk}/{action}/", {}, format="json")
        figures.add("SoD cases checked")
        count_5xx(response)
        if response.status_code != want:
            violations.append(f"{user} {action} {req.status}: {response.status_code} != {want}")

    def make(state, requester):
        return build_request(
            state,
            requester=requester,
            project=world["project"],
            pool=world["pool"],
            division_decider=world["second_lead"],
        )

    # a requester holding both roles decides neither stage of their own request
    attempt(lead_requester, make(Status.PENDING_DIVISION, lead_requester), "approve", 403)
    attempt(lead_requester, make(Status.PENDING_EXECUTIVE, lead_requester), "approve", 403)
    # executive approve on the division stage: a stage skip
    attempt(users["executive"], make(Status.PENDING_DIVISION, users["requester"]), "approve", 403)
    # lead approve after the executive decided: the request moved on
    attempt(users["own_lead"], make(Status.APPROVED, users["requester"]), "approve", 409)
    # the same person does not decide both stages
    req = make(Status.PENDING_DIVISION, users["requester"])
    req.needs_executive = True
    req.executive_reasons = ["is marked urgent"]
    req.priority = "urgent"
    req.save()
    response = api(exec_lead).post(f"/api/v1/requests/{req.pk}/approve/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "pending_executive"
    attempt(exec_lead, req, "approve", 403)
    # a revoked role takes effect on the next call
    req2 = make(Status.PENDING_DIVISION, users["requester"])
    RoleGrant.objects.filter(user=users["own_lead"]).delete()
    fresh = type(users["own_lead"]).objects.get(pk=users["own_lead"].pk)
    attempt(fresh, req2, "approve", 403)
    figures.add("SoD / stage-skip violations", len(violations))
    assert not violations, violations


# --- confidential projects and BOLA ---


def test_confidential_project_is_invisible_outside_its_circle(api, matrix_world):
    world = matrix_world
    users = world["users"]
    world["project"].confidential = True
    world["project"].save()
    req = build_request(
        Status.PENDING_DIVISION,
        requester=users["requester"],
        project=world["project"],
        pool=world["pool"],
        division_decider=world["second_lead"],
    )
    audit_record(actor=users["requester"], action="request.create", obj=req)
    circle = {"requester", "teammate", "own_lead", "executive", "exec_requester", "ops"}
    leaks = []
    for actor in ACTORS[1:]:
        client = api(users[actor])
        sees = actor in circle  # a Django admin is not in it (PRODUCT.md section 2)
        probes = {
            "retrieve": client.get(f"/api/v1/requests/{req.pk}/").status_code == 200,
            "list": req.pk
            in [r["id"] for r in client.get("/api/v1/requests/?page_size=200").json()["results"]],
            "project": client.get(f"/api/v1/projects/{world['project'].pk}/").status_code == 200,
            "allocation": client.get(f"/api/v1/allocations/{world['allocation'].pk}/").status_code
            == 200,
            "page": _login_get(users[actor], f"/requests/{req.pk}/") == 200,
            # the project page links the request only for those who may see it
            "project page": f'href="/requests/{req.pk}/"'
            in _login_get_body(users[actor], f"/projects/{world['project'].pk}/"),
            "audit": req.pk
            in [
                e["object_id"]
                for e in client.get(
                    f"/api/v1/audit/?object_type=requests_app.computerequest&object_id={req.pk}"
                ).json()["results"]
            ],
        }
        for probe, seen in probes.items():
            figures.add("foreign-object probes")
            if seen and not sees:
                leaks.append(f"{actor} sees confidential {probe}")
            if sees and not seen:
                leaks.append(f"{actor} cannot see {probe} of its own circle")
    figures.add("BOLA leaks", sum("sees" in leak for leak in leaks))
    assert not leaks, leaks


def _login_get(user, url):
    from django.test import Client

    c = Client()
    c.force_login(user)
    return c.get(url).status_code


def _login_get_body(user, url):
    from django.test import Client

    c = Client()
    c.force_login(user)
    return c.get(url).content.decode()


def test_foreign_and_unknown_ids_answer_404(api, matrix_world, other_team):
    """BOLA: as the outsider, every object route with ids of another team's hidden objects, with
    sequential ids and with absurd ids answers 404, and lists never show them."""
    world = matrix_world
    users = world["users"]
    world["project"].confidential = True
    world["project"].save()
    hidden = build_request(
        Status.PENDING_DIVISION,
        requester=users["requester"],
        project=world["project"],
        pool=world["pool"],
        division_decider=world["second_lead"],
    )
    draft = build_request(
        Status.DRAFT,
        requester=users["requester"],
        project=world["project"],
        pool=world["pool"],
        division_decider=world["second_lead"],
    )
    client = api(users["outsider"])
    ids = [hidden.pk, draft.pk, hidden.pk + 1000, 2**63 - 1, 2**63, 10**30, 0, -1, "abc"]
    leaks = []
    for rid in ids:
        for method, suffix in [
            ("get", ""),
            ("patch", ""),
            ("put", ""),
            ("post", "submit/"),
            ("post", "withdraw/"),
            ("post", "approve/"),
            ("post", "reject/"),
            ("post", "request-changes/"),
        ]:
            before = business_state()
            response = getattr(client, method)(
                f"/api/v1/requests/{rid}/{suffix}", {"gpus": 1}, format="json"
            )
            figures.add("foreign-object probes")
            count_5xx(response)
            if response.status_code != 404 or state_diff(before, business_state()):
                leaks.append(f"{method} {rid}/{suffix}: {response.status_code}")
        for url in [
            f"/api/v1/allocations/{rid}/",
            f"/api/v1/projects/{rid}/",
            f"/api/v1/audit/{rid}/",
        ]:
            response = client.get(url)
            figures.add("foreign-object probes")
            count_5xx(response)
            if response.status_code == 200 and rid in (world["allocation"].pk, world["project"].pk):
                leaks.append(f"get {url}: 200")
            if response.status_code >= 500:
                leaks.append(f"get {url}: {response.status_code}")
    for alloc in [world["allocation"].pk, 2**63, "x"]:
        response = client.post(f"/api/v1/allocations/{alloc}/release/", {}, format="json")
        figures.add("foreign-object probes")
        count_5xx(response)
        if response.status_code != 404:
            leaks.append(f"release {alloc}: {response.status_code}")
    listed = {r["id"] for r in client.get("/api/v1/requests/?page_size=200").json()["results"]}
    if listed & {hidden.pk, draft.pk}:
        leaks.append("list shows hidden requests")
    projects = {p["id"] for p in client.get("/api/v1/projects/?page_size=200").json()["results"]}
    if world["project"].pk in projects:
        leaks.append("list shows the confidential project")
    audit_ids = {
        e["object_id"]
        for e in client.get("/api/v1/audit/?page_size=200").json()["results"]
        if e["object_type"] == "requests_app.computerequest"
    }
    if audit_ids & {hidden.pk, draft.pk}:
        leaks.append("audit shows hidden requests")
    figures.add("BOLA leaks", len(leaks))
    assert not leaks, leaks
