"""GET /api/v1/audit/: read-only; executives and compute ops see everything, others (Django admins
included) only the events of requests they may view."""

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import audit_record
from requests_app.workflow import Status
from tests import factories

URL = "/api/v1/audit/"
REQ = "requests_app.computerequest"


@pytest.fixture
def lab(requester, project, pool, team, research, executive, other_team):
    open_req = factories.ComputeRequestFactory(
        requester=requester, project=project, pool=pool, status=Status.PENDING_DIVISION
    )
    secret_project = factories.ProjectFactory(team=team, name="Secret", confidential=True)
    secret_req = factories.ComputeRequestFactory(
        requester=requester, project=secret_project, pool=pool, status=Status.PENDING_DIVISION
    )
    draft = factories.ComputeRequestFactory(requester=requester, project=project, pool=pool)
    share = factories.DivisionShareFactory(division=research, pool=pool)
    events = {
        "open": audit_record(actor=requester, action="request.submit", obj=open_req),
        "secret": audit_record(actor=requester, action="request.submit", obj=secret_req),
        "draft": audit_record(actor=requester, action="request.create", obj=draft),
        "share": audit_record(
            actor=executive, action="share.update", obj=share, before={"gpus": 1}, after={"gpus": 2}
        ),
        "pool": audit_record(actor=None, action="pool.create", obj=pool),
    }
    return {"open": open_req, "secret": secret_req, "draft": draft, "events": events}


def ids(response):
    assert response.status_code == 200, response.json()
    return {e["id"] for e in response.json()["results"]}


def client_for(user):
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.mark.parametrize(
    ("persona", "visible"),
    [
        ("executive", {"open", "secret", "draft", "share", "pool"}),
        ("ops", {"open", "secret", "draft", "share", "pool"}),
        # a Django admin holds no product role: nothing confidential, no drafts
        ("admin_user", {"open"}),
        ("requester", {"open", "secret", "draft"}),
        ("teammate", {"open", "secret", "draft"}),
        ("division_lead", {"open", "secret"}),
        ("outsider", {"open"}),
        ("other_lead", {"open"}),
    ],
)
def test_visibility(request, lab, persona, visible):
    api = client_for(request.getfixturevalue(persona))
    assert ids(api.get(URL)) == {lab["events"][k].pk for k in visible}
    hidden = set(lab["events"]) - visible
    for key in hidden:
        assert api.get(f"{URL}{lab['events'][key].pk}/").status_code == 404


def test_filter_by_object(outsider, lab):
    api = client_for(outsider)
    response = api.get(URL, {"object_type": REQ, "object_id": lab["open"].pk})
    assert ids(response) == {lab["events"]["open"].pk}
    # a request outsiders may not view: nothing, not an error that reveals it
    assert ids(api.get(URL, {"object_type": REQ, "object_id": lab["secret"].pk})) == set()


def test_filter_by_action_and_shape(executive, lab):
    response = client_for(executive).get(URL, {"action": "share.update"})
    (event,) = response.json()["results"]
    assert event["actor"] == "exec"
    assert event["object_type"] == "allocator.divisionshare"
    assert (event["before"], event["after"]) == ({"gpus": 1}, {"gpus": 2})
    assert event["at"].endswith("Z") or "+" in event["at"]


@pytest.mark.parametrize("params", [{"object_id": "abc"}, {"object_id": "-1"}, {"since": "x"}])
def test_bad_filters_400(executive, lab, params):
    response = client_for(executive).get(URL, params)
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "errors"}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_read_only(executive, lab, method):
    event = lab["events"]["share"]
    url = URL if method == "post" else f"{URL}{event.pk}/"
    assert getattr(client_for(executive), method)(url, {}).status_code == 405
    assert AuditEvent.objects.count() == 5


def test_anonymous_refused(lab):
    assert APIClient().get(URL).status_code in (401, 403)


@pytest.mark.parametrize("n", [3, 30])
@pytest.mark.parametrize("persona", ["executive", "outsider"])
def test_bounded_queries(request, persona, requester, project, pool, n, django_assert_num_queries):
    for _ in range(n):
        req = factories.ComputeRequestFactory(
            requester=requester, project=project, pool=pool, status=Status.PENDING_DIVISION
        )
        audit_record(actor=requester, action="request.submit", obj=req)
    api = client_for(request.getfixturevalue(persona))
    # roles (2), count, page with actors joined
    with django_assert_num_queries(4):
        response = api.get(URL)
    assert response.json()["count"] == n
