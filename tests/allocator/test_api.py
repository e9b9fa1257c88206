"""/api/v1/pools/, /allocations/, /capacity-changes/: shapes, scoping, permissions, bad input,
bounded queries."""

import pytest
from rest_framework.test import APIClient

from allocator.models import Allocation, CapacityChange, Reclaim
from tests import factories
from tests.factories import in_days


@pytest.fixture
def api():
    return APIClient()


def as_user(api, user):
    api.force_authenticate(user)
    return api


def test_anonymous_is_refused(api, pool):
    assert api.get("/api/v1/pools/").status_code in (401, 403)


def test_pools_list_shape_and_bounded_queries(
    api, requester, pool, project, django_assert_max_num_queries
):
    factories.AllocationFactory(pool=pool, project=project, gpus=8)
    factories.AllocationChangeFactory(pool=pool, project=project, status="waiting", gpus=5)
    for _ in range(10):
        factories.PoolFactory(capacity=16)
    as_user(api, requester)
    # count, page of pools, capacity, allocated, waiting
    with django_assert_max_num_queries(6):
        response = api.get("/api/v1/pools/")
    assert response.status_code == 200
    row = next(r for r in response.json()["results"] if r["name"] == "east/H100")
    assert row == {
        "id": pool.pk,
        "name": "east/H100",
        "cluster": "east",
        "gpu_model": "H100",
        "capacity": 64,
        "allocated": 8,
        "free": 56,
        "waiting": 5,
        "connector": None,
    }


def test_pool_retrieve_filter_and_404(api, requester, pool):
    as_user(api, requester)
    assert api.get(f"/api/v1/pools/{pool.pk}/").json()["capacity"] == 64
    assert api.get("/api/v1/pools/987654/").status_code == 404
    assert api.get("/api/v1/pools/abc/").status_code == 404
    assert api.get("/api/v1/pools/?cluster=west").json()["count"] == 0


def test_allocations_list_scoped_and_bounded(
    api, outsider, requester, pool, project, team, django_assert_max_num_queries
):
    secret = factories.ProjectFactory(team=team, name="Hidden", confidential=True)
    hidden = factories.AllocationFactory(pool=pool, project=secret)
    for _ in range(10):
        factories.AllocationFactory(pool=pool, project=project)
    as_user(api, outsider)
    # 6, plus one for the page's pending reclaims (however many rows): 7
    with django_assert_max_num_queries(7):
        response = api.get("/api/v1/allocations/")
    ids = {r["id"] for r in response.json()["results"]}
    assert hidden.pk not in ids and len(ids) == 10
    assert api.get(f"/api/v1/allocations/{hidden.pk}/").status_code == 404
    # its team sees it
    as_user(api, requester)
    assert api.get(f"/api/v1/allocations/{hidden.pk}/").status_code == 200


def test_allocation_shape_with_request_id(api, requester, pool, project):
    change = factories.AllocationChangeFactory(pool=pool, project=project)
    allocation = factories.AllocationFactory(pool=pool, project=project, change=change)
    req = factories.ComputeRequestFactory(
        pool=pool, project=project, requester=requester, change=change, status="allocated"
    )
    plain = factories.AllocationFactory(pool=pool, project=project)
    as_user(api, requester)
    body = api.get(f"/api/v1/allocations/{allocation.pk}/").json()
    assert set(body) == {
        "id",
        "project",
        "pool",
        "gpus",
        "start",
        "end",
        "state",
        "request",
        "pending_reclaims",
        "gpu_hours_used",
        "enforcement",
    }
    # no connector on the pool, nothing measured
    assert body["gpu_hours_used"] is None and body["enforcement"] is None
    assert body["request"] == req.pk and body["project"] == project.pk and body["state"] == "active"
    assert api.get(f"/api/v1/allocations/{plain.pk}/").json()["request"] is None
    assert api.get("/api/v1/allocations/?state=ended").json()["count"] == 0
    # the list gives the same request ids (looked up once for the page)
    listed = {a["id"]: a["request"] for a in api.get("/api/v1/allocations/").json()["results"]}
    assert listed == {allocation.pk: req.pk, plain.pk: None}


def test_release_by_team_member(api, requester, pool, project):
    allocation = factories.AllocationFactory(pool=pool, project=project)
    as_user(api, requester)
    response = api.post(f"/api/v1/allocations/{allocation.pk}/release/")
    assert response.status_code == 200 and response.json()["state"] == "released"
    again = api.post(f"/api/v1/allocations/{allocation.pk}/release/")
    assert again.status_code == 400


@pytest.mark.parametrize("persona", ["outsider", "ops", "executive", "division_lead"])
def test_release_by_others_is_403(api, persona, request, pool, project):
    allocation = factories.AllocationFactory(pool=pool, project=project)
    as_user(api, request.getfixturevalue(persona))
    response = api.post(f"/api/v1/allocations/{allocation.pk}/release/")
    assert response.status_code == 403
    assert "team" in response.json()["detail"]
    assert Allocation.objects.get(pk=allocation.pk).state == "active"


def test_release_unknown_is_404(api, requester):
    as_user(api, requester)
    assert api.post("/api/v1/allocations/987654/release/").status_code == 404


def test_reclaim_by_ops(api, ops, pool, project):
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=8)
    as_user(api, ops)
    response = api.post(
        f"/api/v1/allocations/{allocation.pk}/reclaim/",
        {"new_gpus": 2, "reason": "Launch", "notice": 24},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["new_gpus"] == 2 and response.json()["status"] == "scheduled"


def test_reclaim_idempotency_key(api, ops, pool, project):
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=8)
    as_user(api, ops)
    url = f"/api/v1/allocations/{allocation.pk}/reclaim/"
    first = api.post(url, {"new_gpus": 2, "reason": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    second = api.post(url, {"new_gpus": 2, "reason": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == second.status_code == 201
    assert Reclaim.objects.count() == 1


@pytest.mark.parametrize("persona", ["requester", "executive", "division_lead"])
def test_reclaim_by_non_ops_is_403(api, persona, request, pool, project):
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=8)
    as_user(api, request.getfixturevalue(persona))
    response = api.post(
        f"/api/v1/allocations/{allocation.pk}/reclaim/",
        {"new_gpus": 0, "reason": "x"},
        format="json",
    )
    assert response.status_code == 403
    assert not Reclaim.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"new_gpus": -1, "reason": "x"}, "new_gpus"),
        ({"new_gpus": 10**9, "reason": "x"}, "new_gpus"),
        ({"new_gpus": 9, "reason": "x"}, "new_gpus"),
        ({"new_gpus": "lots", "reason": "x"}, "new_gpus"),
        ({"new_gpus": 2}, "reason"),
        ({"new_gpus": 2, "reason": "x", "new_end": "someday"}, "new_end"),
        ({"new_gpus": 2, "reason": "x", "notice": -1}, "notice"),
        ({"new_gpus": 2, "reason": "   "}, "reason"),
        ({"new_gpus": 2, "reason": "x", "transfer_to": 987654}, "transfer_to"),
    ],
)
def test_reclaim_bad_input_is_400_and_changes_nothing(api, ops, pool, project, body, field):
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=8)
    as_user(api, ops)
    response = api.post(f"/api/v1/allocations/{allocation.pk}/reclaim/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert not Reclaim.objects.exists()


def test_capacity_changes_list_and_create(api, ops, requester, pool):
    as_user(api, requester)
    listed = api.get(f"/api/v1/capacity-changes/?pool={pool.pk}")
    assert listed.status_code == 200 and listed.json()["count"] == 1
    body = {"pool": pool.pk, "kind": "arrival", "delta": 64, "effective_at": in_days(3).isoformat()}
    assert api.post("/api/v1/capacity-changes/", body, format="json").status_code == 403
    as_user(api, ops)
    created = api.post("/api/v1/capacity-changes/", body, format="json")
    assert created.status_code == 201 and created.json()["delta"] == 64


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"delta": 0}, "delta"),
        ({"delta": -8}, "delta"),
        ({"delta": 10**12}, "delta"),
        ({"kind": "theft"}, "kind"),
        ({"pool": 987654}, "pool"),
        ({"pool": -1}, "pool"),
        ({"pool": "x"}, "pool"),
        ({"delta": "lots"}, "delta"),
        ({"note": "x" * 501}, "note"),
        ({"effective_at": "tomorrow-ish"}, "effective_at"),
        ({"kind": "decommission", "delta": -64}, "delta"),
    ],
)
def test_capacity_change_bad_input_is_400(api, ops, pool, project, patch, field):
    factories.AllocationFactory(pool=pool, project=project, gpus=8)
    as_user(api, ops)
    body = {"pool": pool.pk, "kind": "arrival", "delta": 8, "effective_at": in_days(3).isoformat()}
    body.update(patch)
    response = api.post("/api/v1/capacity-changes/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert CapacityChange.objects.filter(pool=pool).count() == 1
