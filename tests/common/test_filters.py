"""Strict query parameters on the API lists (common/filters.py): an unknown parameter or a value
a filter cannot read answers 400 naming it; the list's own filters, search, ordering, cursor,
page_size and format still work."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from requests_app.workflow import Status
from tests import factories

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def filed(requester, project, pool):
    return factories.ComputeRequestFactory(
        requester=requester, project=project, pool=pool, status=Status.PENDING_DIVISION
    )


@pytest.mark.parametrize(
    ("url", "query", "param", "words"),
    [
        ("/api/v1/requests/", "project=4", "project", "Unknown filter"),
        ("/api/v1/requests/", "status=bogus", "status", "valid choice"),
        ("/api/v1/requests/", "pool=abc", "pool", "valid choice"),
        ("/api/v1/requests/", "mine=maybe", "mine", "true or false"),
        ("/api/v1/requests/", "page=0", "page", "page number"),
        ("/api/v1/requests/", "page=abc", "page", "page number"),
        ("/api/v1/requests/", "page=2&cursor=abc", "page", "not both"),
        ("/api/v1/requests/", "ordering=requester__password", "ordering", "Order by one of"),
        ("/api/v1/allocations/", "active_at=0001-01-01T00:00:00%2B05:00", "active_at", ""),
        ("/api/v1/allocations/", "state=nope", "state", "valid choice"),
        ("/api/v1/allocations/", "request=3", "request", "Unknown filter"),
        ("/api/v1/pools/", "name=east", "name", "Unknown filter"),
        ("/api/v1/capacity-changes/", "effective_after=yesterday", "effective_after", ""),
        ("/api/v1/divisions/", "search=x&shares=1", "shares", "Unknown filter"),
        ("/api/v1/teams/", "division=abc", "division", ""),
        ("/api/v1/projects/", "confidential=perhaps", "confidential", "true or false"),
        ("/api/v1/audit/", "object_id=abc", "object_id", "number"),
        ("/api/v1/audit/", "object=3", "object", "Unknown filter"),
        ("/api/v1/notifications/", "unread=sometimes", "unread", "true or false"),
        ("/api/v1/connectors/", "pool=1", "pool", "Unknown filter"),
    ],
)
def test_bad_query_parameters_are_refused_naming_them(executive, ops, url, query, param, words):
    user = ops if "connectors" in url else executive
    response = api(user).get(f"{url}?{query}")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert list(body["errors"]) == [param]
    assert words in body["errors"][param][0]
    assert f"“{param}”" in body["detail"]


def test_an_unknown_filter_lists_the_known_ones(executive):
    body = api(executive).get("/api/v1/requests/?project=4").json()
    assert body["errors"]["project"] == [
        "Unknown filter. This list takes: cursor, division, mine, ordering, page, page_size, pool, q, "
        "search, status, team."
    ]


def test_every_unknown_parameter_is_named_at_once(executive):
    body = api(executive).get("/api/v1/requests/?project=4&owner=me&status=bogus").json()
    assert set(body["errors"]) == {"project", "owner"}


@pytest.mark.parametrize(
    "query",
    [
        "format=json",
        "page_size=5",
        "ordering=-gpus",
        "search=Train",
        "q=Train",
        "status=pending_division&status=approved",
        "mine=true",
        "pool=",
        "",
    ],
)
def test_the_lists_own_parameters_still_work(executive, filed, query):
    response = api(executive).get(f"/api/v1/requests/?{query}")
    assert response.status_code == 200, response.json()
    assert [r["id"] for r in response.json()["results"]] in ([filed.pk], [])


def test_filters_still_filter(executive, filed, pool):
    other = factories.PoolFactory()
    client = api(executive)
    assert client.get(f"/api/v1/requests/?pool={pool.pk}").json()["count"] == 1
    assert client.get(f"/api/v1/requests/?pool={other.pk}").json()["count"] == 0
    assert client.get("/api/v1/requests/?status=approved").json()["count"] == 0


def test_one_object_ignores_list_parameters(executive, filed):
    # The strict check is for lists; a retrieve is addressed by its id.
    response = api(executive).get(f"/api/v1/requests/{filed.pk}/?page_size=0&project=4")
    assert response.status_code == 200
