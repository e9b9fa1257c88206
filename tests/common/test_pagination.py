"""Cursor pagination on every API list (common/pagination.py, docs/api.md "Lists"): walking
`next` lists every visible row once, in the list's order, even while rows are filed; the last page
costs the queries of the first; page sizes outside 1..1000 and foreign cursors answer 400."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from allocator.connectors.models import PoolConnector
from allocator.models import Allocation, CapacityChange, Pool
from audit.models import AuditEvent
from audit.services import audit_record
from notifications.models import Notification
from org.models import Division, Project, Team
from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests import factories

pytestmark = pytest.mark.django_db
PENDING = Status.PENDING_DIVISION


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def walk(client, url: str, **params) -> tuple[list[int], list[dict]]:
    """Follow `next` from the first page; the ids in the order listed, and every page's body."""
    response = client.get(url, params)
    assert response.status_code == 200, response.json()
    pages = [response.json()]
    while pages[-1]["next"]:
        response = client.get(pages[-1]["next"])
        assert response.status_code == 200, response.json()
        pages.append(response.json())
    return [row["id"] for page in pages for row in page["results"]], pages


@pytest.fixture
def lab(team, other_team, project, pool, executive, ops, requester):
    """A few rows of every listed kind, some of them of a confidential project of another team."""
    secret = factories.ProjectFactory(team=other_team, name="Hush", confidential=True)
    pools = [pool, *factories.PoolFactory.create_batch(4, capacity=64)]
    factories.DivisionFactory(name="Infrastructure")
    for index in range(7):
        filed = factories.ComputeRequestFactory(
            project=project,
            pool=pools[index % 5],
            requester=requester,
            gpus=1 + index % 3,
            status=PENDING,
        )
        factories.AllocationFactory(project=project, pool=pools[index % 5], gpus=2 + index % 2)
        factories.CapacityChangeFactory(pool=pools[index % 5], delta=8)
        Notification.objects.create(recipient=executive, kind="info", message=f"note {index}")
        audit_record(actor=ops, action="test.event", obj=filed, message=f"event {index}")
    hidden = factories.ComputeRequestFactory(project=secret, pool=pool, gpus=5, status=PENDING)
    audit_record(actor=None, action="test.secret", obj=hidden, message="Hush hush")
    factories.AllocationFactory(project=secret, pool=pool, gpus=5)
    factories.ProjectFactory.create_batch(4, team=team)
    factories.TeamFactory.create_batch(3, division=team.division)
    for index, p in enumerate(pools[:3]):
        PoolConnector.objects.create(
            pool=p, kind="slurm", cluster=f"c{index}", partition="gpu", gres="gpu"
        )
    return {"secret": secret}


# url, who lists it, the rows that person may see (in the list's default order)
LISTS = [
    (
        "/api/v1/requests/",
        "executive",
        lambda: ComputeRequest.objects.order_by("-created_at", "-id"),
    ),
    ("/api/v1/allocations/", "executive", lambda: Allocation.objects.order_by("-start", "-id")),
    ("/api/v1/pools/", "executive", lambda: Pool.objects.order_by("cluster", "gpu_model", "id")),
    (
        "/api/v1/capacity-changes/",
        "executive",
        lambda: CapacityChange.objects.order_by("-effective_at", "-id"),
    ),
    ("/api/v1/divisions/", "executive", lambda: Division.objects.order_by("name", "id")),
    ("/api/v1/teams/", "executive", lambda: Team.objects.order_by("name", "id")),
    ("/api/v1/projects/", "executive", lambda: Project.objects.order_by("name", "id")),
    ("/api/v1/audit/", "executive", lambda: AuditEvent.objects.order_by("-at", "-id")),
    (
        "/api/v1/notifications/",
        "executive",
        lambda: Notification.objects.filter(recipient__username="exec").order_by(
            "-created_at", "-id"
        ),
    ),
    (
        "/api/v1/connectors/",
        "ops",
        lambda: PoolConnector.objects.order_by("pool__cluster", "pool__gpu_model", "id"),
    ),
]


@pytest.mark.parametrize(("url", "persona", "rows"), LISTS, ids=[u for u, _, _ in LISTS])
def test_walking_next_lists_every_row_once_in_order(request, lab, url, persona, rows):
    user = request.getfixturevalue(persona)
    expected = list(rows().values_list("id", flat=True))
    assert len(expected) >= 3  # the walk crosses pages

    # when
    listed, pages = walk(api(user), url, page_size=2)

    # then every row once, in the list's order, in pages of two
    assert listed == expected
    assert all(len(page["results"]) <= 2 for page in pages)
    assert pages[0]["previous"] is None and pages[-1]["next"] is None
    assert all(page["count"] == len(expected) for page in pages)
    assert not any(page["count_capped"] for page in pages)


def test_rows_filed_during_the_walk_shift_nothing(lab, executive, requester, project, pool):
    # given a walk by GPUs (a key new rows land in the middle of)
    client = api(executive)
    before = set(ComputeRequest.objects.values_list("id", flat=True))
    first = client.get("/api/v1/requests/", {"page_size": 3, "ordering": "gpus"}).json()
    seen = [r["id"] for r in first["results"]]
    next_url = first["next"]

    # when requests are filed between the pages, at every size and newest first
    while next_url:
        for gpus in (1, 2, 3, 9):
            factories.ComputeRequestFactory(
                project=project, pool=pool, requester=requester, gpus=gpus, status=PENDING
            )
        page = client.get(next_url).json()
        seen += [r["id"] for r in page["results"]]
        next_url = page["next"]

    # then no row twice, every row that was there at the start, in GPU order
    assert len(seen) == len(set(seen))
    assert before <= set(seen)
    by_gpus = dict(ComputeRequest.objects.values_list("id", "gpus"))
    keys = [(by_gpus[i], i) for i in seen]
    assert keys == sorted(keys)


def test_previous_goes_back_to_the_same_rows(lab, executive):
    client = api(executive)
    first = client.get("/api/v1/allocations/", {"page_size": 3}).json()
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()

    back = client.get(third["previous"]).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in second["results"]]
    again = client.get(back["previous"]).json()
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    assert again["previous"] is None
    assert again["next"]


@pytest.mark.parametrize(
    "url", ["/api/v1/requests/", "/api/v1/allocations/", "/api/v1/audit/", "/api/v1/projects/"]
)
def test_last_page_costs_the_queries_of_the_first(lab, executive, url):
    client = api(executive)
    with CaptureQueriesContext(connection) as first:
        body = client.get(url, {"page_size": 2}).json()
    last_url = body["next"]
    assert last_url
    while body["next"]:
        last_url = body["next"]
        body = client.get(last_url).json()
    with CaptureQueriesContext(connection) as last:
        client.get(last_url)
    assert len(last.captured_queries) == len(first.captured_queries)


@pytest.mark.parametrize("size", ["0", "-1", "1001", "abc", "", "1e3", "10**9"])
def test_page_size_outside_one_to_a_thousand_is_refused(executive, size):
    response = api(executive).get("/api/v1/requests/", {"page_size": size})
    assert response.status_code == 400
    body = response.json()
    assert "from 1 to 1000" in body["errors"]["page_size"][0]
    assert "page_size" in body["detail"]


@pytest.mark.parametrize("size", ["1", "1000"])
def test_page_size_from_one_to_a_thousand_is_served(lab, executive, size):
    response = api(executive).get("/api/v1/requests/", {"page_size": size})
    assert response.status_code == 200
    assert len(response.json()["results"]) == min(int(size), ComputeRequest.objects.count())


def test_default_page_holds_fifty(executive, requester, project, pool):
    factories.ComputeRequestFactory.create_batch(
        51, project=project, pool=pool, requester=requester, status=PENDING
    )
    body = api(executive).get("/api/v1/requests/").json()
    assert len(body["results"]) == 50 and body["next"] and body["count"] == 51


def test_count_is_capped(lab, executive, monkeypatch):
    monkeypatch.setattr("common.pagination.CursorPagination.count_cap", 3)
    body = api(executive).get("/api/v1/allocations/", {"page_size": 2}).json()
    assert body["count"] == 3 and body["count_capped"] is True
    listed, _ = walk(api(executive), "/api/v1/allocations/", page_size=2)
    assert len(listed) == Allocation.objects.count() > 3


@pytest.mark.parametrize(
    "cursor", ["nonsense", "eyJwIjpbMV19", "eyJwIjpbIngiLCJ5Il0sInIiOjAsIm8iOiItc3RhcnQsLWlkIn0"]
)
def test_a_cursor_not_of_this_list_is_refused(lab, executive, cursor):
    response = api(executive).get("/api/v1/allocations/", {"cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.json()["errors"]


def test_a_cursor_of_another_order_is_refused(lab, executive):
    client = api(executive)
    next_url = client.get("/api/v1/allocations/", {"page_size": 2}).json()["next"]
    response = client.get(next_url + "&ordering=gpus")
    assert response.status_code == 400
    assert "another order" in response.json()["errors"]["cursor"][0]


def test_ordering_by_offered_keys_walks_in_that_order(lab, executive):
    listed, _ = walk(api(executive), "/api/v1/allocations/", page_size=3, ordering="-gpus")
    rows = dict(Allocation.objects.values_list("id", "gpus"))
    assert listed == sorted(rows, key=lambda i: (-rows[i], -i))


def test_ordering_by_a_key_that_may_be_empty_is_refused(executive):
    # submitted_at is empty on drafts: it cannot be a cursor key, and is not offered
    response = api(executive).get("/api/v1/requests/", {"ordering": "submitted_at"})
    assert response.status_code == 400
    assert "created_at, gpus, id, start" in response.json()["errors"]["ordering"][0]


@pytest.mark.parametrize(
    "url", ["/api/v1/requests/", "/api/v1/allocations/", "/api/v1/projects/", "/api/v1/audit/"]
)
def test_a_confidential_projects_rows_never_show_to_outsiders(lab, request, url, outsider, team):
    # given someone outside the secret project's team, and its team's own events
    secret = lab["secret"]
    viewer = factories.UserFactory(username="viewer")
    factories.MembershipFactory(team=team, user=viewer)

    # when they walk the whole list, a row a page
    listed, pages = walk(api(viewer), url, page_size=1)
    rows = [row for page in pages for row in page["results"]]

    # then nothing of the secret project, and the count agrees
    assert listed and pages[0]["count"] == len(listed)
    assert secret.pk not in {row.get("project") for row in rows}
    assert "Hush" not in str(rows)


# --- Every cursor order is read from an index (as tests/requests_app/test_indexes.py) ---


def plan_of(queryset) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
    try:
        return queryset.explain()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_sort")


def _page_after(queryset, ordering: list[str], reverse: bool = False):
    """The page query the paginator runs after a cursor: keyset filter, order, LIMIT."""
    from common.pagination import CursorPagination

    row = queryset.order_by(*ordering).first()
    values = [getattr(row, term.lstrip("-")) for term in ordering]
    order = [t[1:] if t.startswith("-") else f"-{t}" for t in ordering] if reverse else ordering
    return queryset.filter(CursorPagination._after(ordering, values, reverse)).order_by(*order)[:51]


CURSOR_ORDERS = [
    (lambda: Allocation.objects.all(), ["-start", "-id"], "allocation_recent"),
    (lambda: Allocation.objects.all(), ["end", "id"], "allocation_by_end"),
    (lambda: Allocation.objects.all(), ["-gpus", "-id"], "allocation_by_gpus"),
    (lambda: ComputeRequest.objects.all(), ["-created_at", "-id"], "request_recent"),
    (lambda: ComputeRequest.objects.all(), ["gpus", "id"], "request_by_gpus"),
    (lambda: ComputeRequest.objects.all(), ["start", "id"], "request_by_start"),
    (lambda: CapacityChange.objects.all(), ["-effective_at", "-id"], "capacity_change_recent"),
    (lambda: Project.objects.all(), ["name", "id"], "project_by_name"),
    (lambda: AuditEvent.objects.all(), ["-at", "-id"], "audit_recent"),
    (
        lambda: Notification.objects.filter(
            recipient_id=Notification.objects.values_list("recipient_id", flat=True)[0]
        ),
        ["-created_at", "-id"],
        "notification_recent",
    ),
]


@pytest.mark.parametrize("reverse", [False, True], ids=["next", "previous"])
@pytest.mark.parametrize(
    ("rows", "ordering", "index"), CURSOR_ORDERS, ids=[i for _, _, i in CURSOR_ORDERS]
)
def test_a_page_after_a_cursor_reads_its_index(lab, rows, ordering, index, reverse):
    plan = plan_of(_page_after(rows(), ordering, reverse))
    assert index in plan
    assert "Sort Key" not in plan
    # the cursor's first key bounds the index scan (it does not read from the start)
    assert "Index Cond" in plan


def test_page_numbers_still_page_and_hand_over_to_cursors(executive, project, pool, requester):
    """Scripts written against the page-numbered lists keep working: `page=N` is the N-th page of
    the list's order, its `previous` the page before by number, its `next` a cursor that goes on
    from there; no row is listed twice or left out."""
    for _ in range(7):
        factories.ComputeRequestFactory(
            project=project, pool=pool, requester=requester, status=PENDING
        )
    everyone = list(
        ComputeRequest.objects.order_by("-created_at", "-id").values_list("id", flat=True)
    )
    client = api(executive)

    second = client.get("/api/v1/requests/", {"page": 2, "page_size": 3}).json()

    assert [r["id"] for r in second["results"]] == everyone[3:6]
    assert "page=" not in second["next"] and "cursor=" in second["next"]
    first = client.get(second["previous"]).json()
    assert [r["id"] for r in first["results"]] == everyone[:3]
    assert first["previous"] is None
    rest = client.get(second["next"]).json()
    assert [r["id"] for r in rest["results"]] == everyone[6:]
    assert rest["next"] is None
    past_the_end = client.get("/api/v1/requests/", {"page": 9, "page_size": 3}).json()
    assert past_the_end["results"] == [] and past_the_end["next"] is None
