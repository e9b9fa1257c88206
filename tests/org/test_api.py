"""The org API: divisions (shares and holdings; executives set shares), teams, projects, and
the token endpoint."""

import itertools

import pytest
from rest_framework.test import APIClient

from allocator.models import DivisionShare
from audit.models import AuditEvent
from org.models import Project
from tests import factories
from tests.factories import in_days

_ips = itertools.count(1)


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def as_user(api):
    def login(user):
        api.force_authenticate(user)
        return api

    return login


def errors_shape(response):
    body = response.json()
    assert set(body) == {"detail", "errors"}, body
    return body


# --- divisions ---


def test_anonymous_refused(api, research):
    assert api.get("/api/v1/divisions/").status_code in (401, 403)


def test_divisions_with_shares_and_holdings(as_user, requester, research, applications, pool, team):
    # given Research has 40 of 64 and holds 24 now and 8 more later
    factories.DivisionShareFactory(division=research, pool=pool, gpus=40)
    factories.AllocationFactory(pool=pool, project__team=team, gpus=24)
    factories.AllocationFactory(
        pool=pool, project__team=team, gpus=8, start=in_days(3), end=in_days(6)
    )
    # when
    response = as_user(requester).get("/api/v1/divisions/")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    research_row = next(d for d in body["results"] if d["id"] == research.pk)
    (share,) = research_row["shares"]
    assert share == {
        "pool": pool.pk,
        "pool_name": "east/H100",
        "share": 40,
        "share_percent": 62,
        "held_now": 24,
        "peak": 32,
        "over": False,
    }


def test_division_retrieve_and_404(as_user, requester, research, pool):
    api = as_user(requester)
    assert api.get(f"/api/v1/divisions/{research.pk}/").json()["name"] == "Research"
    assert api.get("/api/v1/divisions/999999/").status_code == 404
    assert api.get("/api/v1/divisions/abc/").status_code == 404


def share_url(division):
    return f"/api/v1/divisions/{division.pk}/share/"


@pytest.mark.parametrize("method", ["post", "patch"])
def test_executive_sets_share(as_user, executive, research, pool, method):
    # when
    response = getattr(as_user(executive), method)(
        share_url(research), {"pool": pool.pk, "gpus": 30}, format="json"
    )
    # then
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["before"], body["after"], body["changed"]) == (0, 30, True)
    assert DivisionShare.objects.get(division=research, pool=pool).gpus == 30
    assert AuditEvent.objects.filter(action="share.update").count() == 1


def test_share_cut_flags_reclaims(as_user, executive, research, pool, team):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=40)
    big = factories.AllocationFactory(pool=pool, project__team=team, gpus=20)
    factories.AllocationFactory(pool=pool, project__team=team, gpus=10)
    response = as_user(executive).post(
        share_url(research), {"pool": pool.pk, "gpus": 15}, format="json"
    )
    body = response.json()
    assert body["over"] is True
    assert [r["id"] for r in body["reclaim"]] == [big.pk]
    assert any("reclaim" in w for w in body["warnings"])


@pytest.mark.parametrize("persona", ["requester", "division_lead", "ops", "admin_user"])
def test_non_executives_get_403(as_user, request, persona, research, pool):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=40)
    response = as_user(request.getfixturevalue(persona)).post(
        share_url(research), {"pool": pool.pk, "gpus": 1}, format="json"
    )
    assert response.status_code == 403
    assert "executives" in errors_shape(response)["detail"]
    assert DivisionShare.objects.get().gpus == 40
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"gpus": -1}, "gpus"),
        ({"gpus": 65}, "gpus"),
        ({"gpus": 10**20}, "gpus"),
        ({"gpus": "many"}, "gpus"),
        ({"gpus": 1.5}, "gpus"),
        ({"gpus": "<script>alert(1)</script>"}, "gpus"),
        ({"gpus": None}, "gpus"),
        ({"pool": 999999, "gpus": 1}, "pool"),
        ({"pool": "x", "gpus": 1}, "pool"),
        ({"pool": None, "gpus": 1}, "pool"),
    ],
)
def test_bad_share_input_400(as_user, executive, research, pool, payload, field):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=40)
    data = {"pool": pool.pk, **payload}
    response = as_user(executive).post(share_url(research), data, format="json")
    assert response.status_code == 400
    assert field in errors_shape(response)["errors"]
    assert DivisionShare.objects.get().gpus == 40
    assert not AuditEvent.objects.exists()


def test_share_unknown_division_404(as_user, executive, pool):
    response = as_user(executive).post(
        "/api/v1/divisions/999999/share/", {"pool": pool.pk, "gpus": 1}, format="json"
    )
    assert response.status_code == 404


# --- teams ---


def test_teams_list_and_filter(as_user, outsider, team, other_team, requester, teammate, research):
    api = as_user(outsider)
    body = api.get("/api/v1/teams/").json()
    assert {t["name"] for t in body["results"]} == {"Pretraining", "Assistant"}
    pretraining = next(t for t in body["results"] if t["id"] == team.pk)
    assert sorted(pretraining["members"]) == ["rita", "tom"]
    assert pretraining["division_name"] == "Research"
    only = api.get("/api/v1/teams/", {"division": research.pk}).json()["results"]
    assert [t["id"] for t in only] == [team.pk]
    assert api.get(f"/api/v1/teams/{team.pk}/").status_code == 200
    assert api.get("/api/v1/teams/999999/").status_code == 404


def test_bad_filter_value_is_400(as_user, outsider, team):
    response = as_user(outsider).get("/api/v1/teams/", {"division": "abc"})
    assert response.status_code == 400
    errors_shape(response)


def test_unknown_ordering_is_refused_naming_the_offered_ones(as_user, outsider, team):
    response = as_user(outsider).get("/api/v1/teams/", {"ordering": "members"})
    assert response.status_code == 400
    assert "id, name" in response.json()["errors"]["ordering"][0]


# --- projects ---


@pytest.fixture
def secret(team):
    return factories.ProjectFactory(team=team, name="Secret", confidential=True)


@pytest.mark.parametrize(
    ("persona", "sees_secret"),
    [
        ("requester", True),
        ("division_lead", True),
        ("executive", True),
        ("ops", True),
        ("admin_user", False),  # a Django admin with no role that sees it
        ("outsider", False),
        ("other_lead", False),
    ],
)
def test_confidential_projects_scoped(as_user, request, persona, sees_secret, project, secret):
    api = as_user(request.getfixturevalue(persona))
    names = {p["name"] for p in api.get("/api/v1/projects/").json()["results"]}
    assert ("Secret" in names) is sees_secret
    assert "Atlas" in names
    assert api.get(f"/api/v1/projects/{secret.pk}/").status_code == (200 if sees_secret else 404)


def test_project_filters(as_user, requester, project, other_team, research):
    factories.ProjectFactory(team=other_team, name="Fjord", state="winding_down")
    api = as_user(requester)
    mine = api.get("/api/v1/projects/", {"mine": "true"}).json()["results"]
    assert [p["name"] for p in mine] == ["Atlas"]
    winding = api.get("/api/v1/projects/", {"state": "winding_down"}).json()["results"]
    assert [p["name"] for p in winding] == ["Fjord"]
    research_only = api.get("/api/v1/projects/", {"division": research.pk}).json()["results"]
    assert [p["name"] for p in research_only] == ["Atlas"]
    assert api.get("/api/v1/projects/", {"state": "bogus"}).status_code == 400


def test_member_creates_project(as_user, requester, team):
    # when
    response = as_user(requester).post(
        "/api/v1/projects/",
        {"name": "  Nova ", "team": team.pk, "expected_end": "2031-01-31", "confidential": True},
        format="json",
    )
    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "Nova"
    assert body["state"] == "active"
    assert body["division"] == team.division_id
    project = Project.objects.get(name="Nova")
    assert project.confidential
    event = AuditEvent.objects.get(action="project.create")
    assert event.object_id == project.pk and event.actor == requester


@pytest.mark.parametrize("persona", ["outsider", "division_lead", "executive", "ops"])
def test_non_member_cannot_create(as_user, request, persona, team):
    response = as_user(request.getfixturevalue(persona)).post(
        "/api/v1/projects/", {"name": "Nova", "team": team.pk}, format="json"
    )
    assert response.status_code == 403
    assert "team you belong to" in errors_shape(response)["detail"]
    assert not Project.objects.filter(name="Nova").exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "atlas"}, "name"),  # unique whatever the case
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"name": None}, "name"),
        ({"team": 999999}, "team"),
        ({"team": -3}, "team"),
        ({"team": "abc"}, "team"),
        ({"team": 10**30}, "team"),
        ({"expected_end": "not a date"}, "expected_end"),
        ({"expected_end": "2030-02-31"}, "expected_end"),
        ({"description": "d" * 5001}, "description"),
        ({"confidential": "perhaps"}, "confidential"),
    ],
)
def test_bad_project_input_400(as_user, requester, team, project, payload, field):
    data = {"name": "Nova", "team": team.pk, **payload}
    before = Project.objects.count()
    response = as_user(requester).post("/api/v1/projects/", data, format="json")
    assert response.status_code == 400, response.json()
    assert field in errors_shape(response)["errors"]
    assert Project.objects.count() == before
    assert not AuditEvent.objects.exists()


def test_script_name_stored_verbatim_and_returned_as_json(as_user, requester, team):
    name = "<script>alert(1)</script>"
    response = as_user(requester).post(
        "/api/v1/projects/", {"name": name, "team": team.pk}, format="json"
    )
    assert response.status_code == 201
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["name"] == name


def test_projects_are_not_updated_or_deleted_via_api(as_user, requester, project):
    api = as_user(requester)
    assert api.patch(f"/api/v1/projects/{project.pk}/", {"name": "X"}).status_code == 405
    assert api.delete(f"/api/v1/projects/{project.pk}/").status_code == 405


# --- bounded queries on every list ---


def _lab(n, research, applications):
    for i in range(n):
        pool = factories.PoolFactory(capacity=64)
        team = factories.TeamFactory(division=research if i % 2 else applications)
        for _ in range(2):
            factories.MembershipFactory(team=team)
        project = factories.ProjectFactory(team=team, confidential=bool(i % 3))
        factories.DivisionShareFactory(division=research, pool=pool, gpus=20)
        factories.AllocationFactory(pool=pool, project=project, gpus=8)


@pytest.mark.parametrize("n", [3, 30])
@pytest.mark.parametrize(
    ("url", "queries"),
    [
        # count, page, + pools, shares, pool summaries (capacity, holdings), allocations to
        # reclaim (the lab's divisions stand above their shares)
        ("/api/v1/divisions/", 7),
        # count, page, members (prefetch)
        ("/api/v1/teams/", 3),
        # roles (2), count, page, scheduler accounts (prefetch)
        ("/api/v1/projects/", 5),
    ],
)
def test_lists_bounded_queries(
    as_user, requester, research, applications, n, url, queries, django_assert_num_queries
):
    _lab(n, research, applications)
    api = as_user(requester)
    with django_assert_num_queries(queries):
        response = api.get(url)
    assert response.status_code == 200


# --- token ---


@pytest.fixture
def ip():
    """A fresh client address per test, so the throttle of one test never trips another."""
    return f"10.9.{next(_ips) // 250}.{next(_ips) % 250}"


def test_token_then_use_it(api, requester, ip):
    # when
    response = api.post(
        "/api/v1/auth/token/", {"username": "rita", "password": "pw"}, REMOTE_ADDR=ip
    )
    # then
    assert response.status_code == 200
    token = response.json()["token"]
    again = api.post(
        "/api/v1/auth/token/", {"username": "rita", "password": "pw"}, format="json", REMOTE_ADDR=ip
    )
    assert again.json()["token"] == token
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert fresh.get("/api/v1/teams/").status_code == 200


@pytest.mark.parametrize(
    "data",
    [
        {"username": "rita", "password": "wrong"},
        {"username": "nobody", "password": "pw"},
        {"username": "rita"},
        {},
    ],
)
def test_token_bad_credentials_400(api, requester, ip, data):
    response = api.post("/api/v1/auth/token/", data, format="json", REMOTE_ADDR=ip)
    assert response.status_code == 400
    errors_shape(response)
    assert "token" not in response.json()


def test_bad_token_refused(api, requester):
    api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = api.get("/api/v1/teams/")
    # 403 rather than 401: session auth comes first and sends no WWW-Authenticate challenge
    assert response.status_code in (401, 403)
    assert errors_shape(response)["detail"] == "Invalid token."


def test_token_throttled(api, requester, ip):
    # different usernames: django-axes would lock one username out after 5 (test_session.py)
    statuses = [
        api.post(
            "/api/v1/auth/token/", {"username": f"rita{i}", "password": "wrong"}, REMOTE_ADDR=ip
        ).status_code
        for i in range(12)
    ]
    assert statuses[:10] == [400] * 10
    assert statuses[10:] == [429, 429]
    # a right password does not get through the throttle either
    response = api.post(
        "/api/v1/auth/token/", {"username": "rita", "password": "pw"}, REMOTE_ADDR=ip
    )
    assert response.status_code == 429
    assert "token" not in response.json()


# --- Idempotency-Key ---


def test_project_create_idempotent(as_user, requester, team):
    api = as_user(requester)
    data = {"name": "Nova", "team": team.pk}
    first = api.post("/api/v1/projects/", data, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = api.post("/api/v1/projects/", data, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert Project.objects.filter(name="Nova").count() == 1
    assert AuditEvent.objects.filter(action="project.create").count() == 1
    other = api.post(
        "/api/v1/projects/", {**data, "name": "Other"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert other.status_code == 422
    assert not Project.objects.filter(name="Other").exists()


def test_share_update_idempotent(as_user, executive, research, pool):
    api = as_user(executive)
    responses = [
        api.post(
            share_url(research),
            {"pool": pool.pk, "gpus": 9},
            format="json",
            HTTP_IDEMPOTENCY_KEY="s-1",
        )
        for _ in range(2)
    ]
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[1]["Idempotent-Replayed"] == "true"
    assert responses[1].json()["changed"] is True  # the first call's answer, replayed
    assert AuditEvent.objects.filter(action="share.update").count() == 1
