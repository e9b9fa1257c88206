"""Permission matrix: role x action x state, for the API and the pages, on an open and on a
confidential project. What a user may not see answers 404; what they see but may not do, 403;
what the request's state no longer allows, 409 (the page: back to the request with a message).

The oracle below is written from PRODUCT.md sections 1-3, independently of requests_app.policies.
"""

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests import factories

ROLES = [
    "requester",
    "teammate",
    "outsider",
    "division_lead",
    "other_lead",
    "executive",
    "ops",
    "admin_user",
]
ACTIONS = ["retrieve", "update", "submit", "withdraw", "approve", "reject", "request_changes"]
TEAM = {"requester", "teammate"}
CLEARED = TEAM | {"division_lead", "executive", "ops"}  # may see confidential projects


def visible(role, status, confidential):
    if role in TEAM:
        return True
    if status == Status.DRAFT:
        return False
    return role in CLEARED if confidential else True


def expected(role, action, status, confidential) -> int:
    if not visible(role, status, confidential):
        return 404
    if action == "retrieve":
        return 200
    if action in ("update", "submit"):
        if role != "requester":
            return 403
        return 200 if status in (Status.DRAFT, Status.CHANGES_REQUESTED) else 409
    if action == "withdraw":
        if role != "requester":
            return 403
        withdrawable = (
            Status.DRAFT,
            Status.PENDING_DIVISION,
            Status.PENDING_EXECUTIVE,
            Status.CHANGES_REQUESTED,
        )
        return 200 if status in withdrawable else 409
    # decisions
    if role not in ("division_lead", "executive"):
        return 403
    if status not in (Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE):
        return 409
    if role == "division_lead":
        return 200 if status == Status.PENDING_DIVISION else 403
    return 200 if status == Status.PENDING_EXECUTIVE else 403


def _api_call(client, action, req):
    url = f"/api/v1/requests/{req.pk}/"
    if action == "retrieve":
        return client.get(url)
    if action == "update":
        return client.patch(url, {"gpus": 9}, format="json")
    path = {"request_changes": "request-changes"}.get(action, action)
    return client.post(f"{url}{path}/", {"comment": "Because."}, format="json")


def _snapshot(req):
    return (
        ComputeRequest.objects.values().get(pk=req.pk),
        AuditEvent.objects.filter(
            object_id=req.pk, object_type="requests_app.computerequest"
        ).count(),
    )


@pytest.mark.parametrize("confidential", [False, True], ids=["open", "confidential"])
@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("role", ROLES)
def test_api_matrix(api, make_request, project, request, role, status, confidential):
    # given
    project.confidential = confidential
    project.save(update_fields=["confidential"])
    user = request.getfixturevalue(role)

    for action in ACTIONS:
        req = make_request(status)
        before = _snapshot(req)
        want = expected(role, action, status, confidential)

        # when
        response = _api_call(api(user), action, req)

        # then
        assert response.status_code == want, (role, action, status, response.content)
        if want != 200:
            assert response.json()["detail"], (role, action, status)
        if want != 200 or action == "retrieve":
            assert _snapshot(req) == before, (role, action, status)


PAGE_ACTIONS = ["detail", "edit", "submit", "withdraw", "decide"]


def _page_call(client, action, req):
    if action == "detail":
        return client.get(reverse("requests:detail", args=[req.pk]))
    if action == "edit":
        return client.get(reverse("requests:edit", args=[req.pk]))
    data = {"action": "approve"} if action == "decide" else {}
    return client.post(reverse(f"requests:{action}", args=[req.pk]), data)


def page_expected(role, action, status, confidential):
    """status code, and for a 302 whether it succeeded."""
    api_action = {"detail": "retrieve", "edit": "update", "decide": "approve"}.get(action, action)
    code = expected(role, api_action, status, confidential)
    if action == "detail":
        return code
    if action == "edit" and code == 200:
        return 200
    return {200: 302, 409: 302}.get(code, code)


@pytest.mark.parametrize("confidential", [False, True], ids=["open", "confidential"])
@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("role", ROLES)
def test_page_matrix(web, make_request, project, request, role, status, confidential):
    # given
    project.confidential = confidential
    project.save(update_fields=["confidential"])
    client = web(request.getfixturevalue(role))

    for action in PAGE_ACTIONS:
        req = make_request(status)
        before = _snapshot(req)
        want = page_expected(role, action, status, confidential)
        ok = expected(
            role,
            {"detail": "retrieve", "edit": "update", "decide": "approve"}.get(action, action),
            status,
            confidential,
        )

        # when
        response = _page_call(client, action, req)

        # then
        assert response.status_code == want, (role, action, status)
        if want == 403:
            assert "Not allowed" in response.content.decode()
        if ok != 200 or action in ("detail", "edit"):
            assert _snapshot(req) == before, (role, action, status)
        else:
            assert _snapshot(req) != before, (role, action, status)


@pytest.mark.parametrize("role", ROLES)
def test_list_shows_only_what_the_role_may_see(api, web, make_request, project, request, role):
    # given an open and a confidential project's requests, and a draft
    open_req = make_request(Status.PENDING_DIVISION)
    draft = make_request(Status.DRAFT)
    secret_project = factories.ProjectFactory(team=project.team, confidential=True)
    secret = make_request(Status.PENDING_DIVISION, project=secret_project, goal="Secret plan")
    user = request.getfixturevalue(role)

    # when
    api_ids = {r["id"] for r in api(user).get("/api/v1/requests/").json()["results"]}
    page_ids = {r.pk for r in web(user).get(reverse("requests:list")).context["page"].object_list}
    search = web(user).get(reverse("requests:list") + "?q=Secret").context["page"].object_list

    # then
    want = {open_req.pk}
    if role in TEAM:
        want |= {draft.pk}
    if role in CLEARED:
        want |= {secret.pk}
    assert api_ids == want
    assert page_ids == want
    assert bool(list(search)) is (role in CLEARED)


def test_anonymous_pages_redirect_to_login(client, make_request):
    req = make_request(Status.PENDING_DIVISION)
    for url in (
        reverse("requests:list"),
        reverse("requests:inbox"),
        reverse("requests:detail", args=[req.pk]),
        reverse("requests:create"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response.url
