"""The requests list and the approvals inbox page without a full COUNT(*) (common/listing.py,
docs/performance.md "HTML lists"): the requests list goes "older / newer" from a cursor on
(created_at, id); the inbox keeps page numbers with a total counted up to 1,000. Walked to the
end, with their filters and sorts, each shows every row once."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests import factories
from tests.support.navigation import NEXT, next_query, walk

pytestmark = pytest.mark.django_db


def _ids(response):
    return [r.pk for r in response.context["page"].object_list]


@pytest.fixture
def many(make_request, pool):
    """70 pending and 20 approved requests, created in groups of 7 at the same instant (ties
    that only the id orders)."""
    made = [make_request(Status.PENDING_DIVISION) for _ in range(70)]
    made += [make_request(Status.APPROVED) for _ in range(20)]
    base = timezone.now() - timedelta(days=30)
    for i, r in enumerate(made):
        ComputeRequest.objects.filter(pk=r.pk).update(created_at=base + timedelta(hours=i // 7))
    return made


def test_requests_list_walks_older_to_the_end_with_a_filter(web, requester, many):
    client = web(requester)
    url = reverse("requests:list")

    # when the filtered list is walked through "Older" to the end
    seen = walk(client, url, _ids, first="status=pending_division")

    # then every pending request shows once, newest first (ties by number), none of the others
    expected = list(
        ComputeRequest.objects.filter(status=Status.PENDING_DIVISION)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )
    assert seen == expected and len(expected) == 70


def test_requests_list_newer_goes_back_to_the_same_pages(web, requester, many):
    client = web(requester)
    url = reverse("requests:list")
    first = client.get(url)
    second = client.get(f"{url}?{next_query(first.content.decode())}")
    third = client.get(f"{url}?{next_query(second.content.decode())}")
    assert "90 requests" in first.content.decode()

    # "Newer" from the third page is the second page, and from there the first
    body = third.content.decode()
    newer = body.split('rel="prev" href="?')[1].split('"')[0].replace("&amp;", "&")
    back = client.get(f"{url}?{newer}")
    assert _ids(back) == _ids(second)
    newer = back.content.decode().split('rel="prev" href="?')[1].split('"')[0]
    assert _ids(client.get(f"{url}?{newer.replace('&amp;', '&')}")) == _ids(first)
    assert "Newest" in body and "Newer" in body


@pytest.mark.parametrize(
    "cursor",
    [
        "older.",
        "older.%00",
        "older.bm90IGpzb24",  # "not json"
        "older.WyJ4IiwxXQ",  # ["x", 1]: a string for a date
        "older.W3sidCI6IjIwMjYtMDEtMDFUMDA6MDA6MDAifSwxXQ",  # a date without its zone
        "older.W3sidCI6Ijk5OTktMTItMzFUMjM6NTk6NTktMDU6MDAifSwxXQ",  # past year 9999 in UTC
        "older.W3sidCI6IjIwMjYtMDEtMDFUMDA6MDA6MDBaIn0sMWUxMDBd",  # an id of 1e100 (a float)
        "sideways.W10",
        "x" * 5000,
    ],
)
def test_a_cursor_not_made_by_the_list_reads_as_the_first_page(web, requester, many, cursor):
    client = web(requester)
    url = reverse("requests:list")
    response = client.get(f"{url}?cursor={cursor}")
    assert response.status_code == 200
    assert _ids(response) == _ids(client.get(url))


@pytest.mark.parametrize("n", [3, 40])
def test_requests_list_query_count_is_the_same_at_any_size(web, requester, make_request, n):
    for _ in range(n):
        make_request(Status.PENDING_DIVISION)
    client = web(requester)
    url = reverse("requests:list")
    cursor = next_query(client.get(url).content.decode())
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    # session, user, roles (2), the capped count, the page, the filter's choices (3), the
    # forecasts' pool versions, unread count
    assert len(queries) == 10
    if cursor:  # an "older" page costs the same as the first
        with CaptureQueriesContext(connection) as older:
            client.get(f"{url}?{cursor}")
        assert len(older) <= len(queries) + 6  # + the forecast's rows on a cold cache


@pytest.mark.parametrize("sort", ["oldest", "due", "largest", "pool", "division"])
def test_inbox_walks_to_the_end_in_every_sort(web, division_lead, make_request, pool, sort):
    other = factories.PoolFactory(capacity=64)
    made = {
        make_request(Status.PENDING_DIVISION, pool=other if i % 3 else pool, gpus=1 + i % 5).pk
        for i in range(60)
    }
    client = web(division_lead)
    seen = walk(
        client,
        reverse("requests:inbox"),
        lambda r: [i["req"].pk for i in r.context["items"]],
        first=f"sort={sort}",
    )
    assert sorted(seen) == sorted(made)
    first = client.get(reverse("requests:inbox") + f"?sort={sort}").content.decode()
    assert "60 waiting" in first and "Page 1 of 3" in first and NEXT.search(first)
