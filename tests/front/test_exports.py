"""GET /api/v1/export/<what>.csv|.ndjson: the bulk export (front/exports.py). Same rows as the
lists (the visibility rule, the lists' filters), streamed from one server-side cursor: a
bounded number of queries whatever the row count, the first chunk written before the rest is
read; CSV safe to open in a spreadsheet; bad filters 400, never 500."""

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from allocator.models import LedgerEntry
from audit.services import audit_record
from front import exports
from requests_app.workflow import Status
from tests import factories

pytestmark = pytest.mark.django_db

WHAT = ["requests", "allocations", "ledger", "audit"]


def _csv(response) -> list[dict]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def _ndjson(response) -> list[dict]:
    text = b"".join(response.streaming_content).decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def lab(requester, project, pool, team):
    """One open and one confidential project of the requester's team, each with a request, an
    allocation, a ledger entry and an audit event."""
    secret = factories.ProjectFactory(team=team, name="Secret", confidential=True)
    rows = {}
    for key, proj in (("open", project), ("secret", secret)):
        req = factories.ComputeRequestFactory(
            requester=requester, project=proj, pool=pool, status=Status.PENDING_DIVISION
        )
        allocation = factories.AllocationFactory(pool=pool, project=proj, gpus=8)
        entry = LedgerEntry.objects.create(
            allocation=allocation, kind="grant", gpus=8, start=allocation.start,
            end=allocation.end, note="granted",
        )  # fmt: skip
        event = audit_record(actor=requester, action="request.submit", obj=req)
        rows[key] = {"requests": req, "allocations": allocation, "ledger": entry, "audit": event}
    return rows


@pytest.mark.parametrize("what", WHAT)
def test_csv_has_a_header_row_and_a_dated_attachment_name(what, lab, executive):
    # when
    response = _api(executive).get(f"/api/v1/export/{what}.csv")

    # then
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    day = timezone.now().astimezone(UTC).date().isoformat()
    assert response["Content-Disposition"] == f'attachment; filename="allotment-{what}-{day}.csv"'
    text = b"".join(response.streaming_content).decode()
    header = text.splitlines()[0].split(",")
    assert header == next(e for e in exports.EXPORTS if e.name == what).columns
    assert header[0] == "id"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {int(r["id"]) for r in rows} >= {lab["open"][what].pk, lab["secret"][what].pk}


@pytest.mark.parametrize("what", WHAT)
def test_ndjson_is_one_object_per_line_in_id_order(what, lab, executive):
    response = _api(executive).get(f"/api/v1/export/{what}.ndjson")
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    rows = _ndjson(response)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert {lab["open"][what].pk, lab["secret"][what].pk} <= {r["id"] for r in rows}


@pytest.mark.parametrize("what", WHAT)
def test_confidential_rows_are_hidden_from_those_who_may_not_see_them(
    what, lab, outsider, requester, ops
):
    # an outsider (another division's researcher) sees the open project's rows only...
    seen = {r["id"] for r in _ndjson(_api(outsider).get(f"/api/v1/export/{what}.ndjson"))}
    assert lab["secret"][what].pk not in seen
    if what != "audit":  # (the audit trail shows others only the events of requests they see)
        assert lab["open"][what].pk in seen
    # ...while the project's team and compute ops see both
    for viewer in (requester, ops):
        seen = {r["id"] for r in _ndjson(_api(viewer).get(f"/api/v1/export/{what}.ndjson"))}
        assert {lab["open"][what].pk, lab["secret"][what].pk} <= seen, viewer


def test_the_export_matches_the_api_representation(lab, requester):
    # given the API's view of the open request and its allocation
    client = _api(requester)
    api = client.get(f"/api/v1/requests/{lab['open']['requests'].pk}/").json()
    exported = {r["id"]: r for r in _ndjson(client.get("/api/v1/export/requests.ndjson"))}
    row = exported[api["id"]]

    # then every field they share has the same value, times included
    shared = set(row) & set(api)
    assert {"id", "project", "pool", "pool_name", "gpus", "start", "end", "status"} <= shared
    assert {k: row[k] for k in shared} == {k: api[k] for k in shared}
    assert row["start"].endswith("Z") and datetime.fromisoformat(row["start"]).tzinfo

    allocation = lab["open"]["allocations"]
    api = client.get(f"/api/v1/allocations/{allocation.pk}/").json()
    row = {r["id"]: r for r in _ndjson(client.get("/api/v1/export/allocations.ndjson"))}[
        allocation.pk
    ]
    shared = set(row) & set(api)
    assert {"id", "project", "pool", "gpus", "start", "end", "state", "request"} <= shared
    assert {k: row[k] for k in shared} == {k: api[k] for k in shared}


@pytest.mark.parametrize("payload", ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx"])
def test_csv_cells_cannot_run_as_formulas(payload, requester, project, pool):
    # given a justification a spreadsheet would run
    req = factories.ComputeRequestFactory(
        requester=requester, project=project, pool=pool, goal=payload
    )

    # when
    (row,) = _csv(_api(requester).get("/api/v1/export/requests.csv"))

    # then the cell is text
    assert int(row["id"]) == req.pk and row["goal"] == "'" + payload
    # while the NDJSON keeps the text as it is
    (obj,) = _ndjson(_api(requester).get("/api/v1/export/requests.ndjson"))
    assert obj["goal"] == payload


def test_json_fields_are_json_in_csv(requester, project, pool):
    factories.ComputeRequestFactory(
        requester=requester, project=project, pool=pool,
        executive_reasons=["Urgent priority."], status=Status.PENDING_EXECUTIVE,
    )  # fmt: skip
    (row,) = _csv(_api(requester).get("/api/v1/export/requests.csv"))
    assert json.loads(row["executive_reasons"]) == ["Urgent priority."]


def test_the_lists_filters_apply(requester, project, pool, team):
    # given requests in two states and allocations on two pools
    waiting = factories.ComputeRequestFactory(
        requester=requester, project=project, pool=pool, status=Status.WAITING
    )
    factories.ComputeRequestFactory(
        requester=requester, project=project, pool=pool, status=Status.REJECTED
    )
    other_pool = factories.PoolFactory(cluster="west", gpu_model="H200")
    here = factories.AllocationFactory(pool=pool, project=project)
    factories.AllocationFactory(pool=other_pool, project=project)
    entry = LedgerEntry.objects.create(
        allocation=here, kind="release", gpus=0, start=here.start, end=here.end
    )
    LedgerEntry.objects.create(
        allocation=here, kind="grant", gpus=8, start=here.start, end=here.end
    )
    client = _api(requester)

    # then
    got = _ndjson(client.get("/api/v1/export/requests.ndjson", {"status": "waiting"}))
    assert [r["id"] for r in got] == [waiting.pk]
    got = _ndjson(client.get("/api/v1/export/allocations.ndjson", {"pool": pool.pk}))
    assert [r["id"] for r in got] == [here.pk]
    got = _ndjson(client.get("/api/v1/export/ledger.ndjson", {"kind": "release"}))
    assert [r["id"] for r in got] == [entry.pk] and got[0]["pool_name"] == pool.name
    mine = _ndjson(client.get("/api/v1/export/requests.ndjson", {"mine": "true"}))
    assert len(mine) == 2


@pytest.mark.parametrize(
    "what, params, field",
    [
        ("requests", {"project": "4"}, "project"),
        ("requests", {"page": "2"}, "page"),
        ("requests", {"status": "bogus"}, "status"),
        ("requests", {"pool": "abc"}, "pool"),
        ("requests", {"mine": "maybe"}, "mine"),
        ("allocations", {"active_at": "2027-01-01T00:00:00"}, "active_at"),
        ("allocations", {"active_at": "0001-01-01T00:00:00+05:00"}, "active_at"),
        ("allocations", {"pool": "99999999999999999999999"}, "pool"),
        ("ledger", {"kind": "<script>"}, "kind"),
        ("ledger", {"allocation": "-1"}, "allocation"),
        ("ledger", {"since": "yesterday"}, "since"),
        ("audit", {"until": "9999-12-31T23:59:59-05:00"}, "until"),
        ("audit", {"object_id": "1e400"}, "object_id"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_bad_filters_answer_400_naming_the_parameter(what, params, field, fmt, requester):
    response = _api(requester).get(f"/api/v1/export/{what}.{fmt}", params)
    assert response.status_code == 400, getattr(response, "content", b"")[:300]
    body = response.json()
    assert field in body["errors"] and f"“{field}”" in body["detail"]


def test_sign_in_is_required_and_a_token_works(lab, requester, client):
    assert client.get("/api/v1/export/requests.csv").status_code in (401, 403)
    bad = APIClient(HTTP_AUTHORIZATION="Token not-a-token")
    assert bad.get("/api/v1/export/requests.csv").status_code in (401, 403)
    token = Token.objects.create(user=requester)
    ok = APIClient(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = ok.get("/api/v1/export/requests.ndjson")
    assert response.status_code == 200 and len(_ndjson(response)) == 2


def test_a_session_works_too(lab, requester, client):
    client.force_login(requester)
    response = client.get("/api/v1/export/allocations.csv")
    assert response.status_code == 200 and len(_csv(response)) == 2


@pytest.mark.parametrize("what", WHAT)
def test_rows_stream_in_chunks_from_one_server_side_cursor(
    what, monkeypatch, requester, project, pool
):
    # given more rows than one chunk
    monkeypatch.setattr(exports, "CHUNK_ROWS", 5)
    for _ in range(12):
        req = factories.ComputeRequestFactory(requester=requester, project=project, pool=pool)
        allocation = factories.AllocationFactory(pool=pool, project=project)
        LedgerEntry.objects.create(
            allocation=allocation, kind="grant", gpus=8, start=allocation.start,
            end=allocation.end,
        )  # fmt: skip
        audit_record(actor=requester, action="request.create", obj=req)
    client = _api(requester)

    table = {"requests": "computerequest", "allocations": "allocation", "ledger": "ledgerentry",
             "audit": "auditevent"}[what]  # fmt: skip

    def reads_rows(queries):
        return [q for q in queries if f'_{table}"' in q["sql"].split(" WHERE ")[0]]

    # when the view answers, nothing has been read yet
    with CaptureQueriesContext(connection) as answered:
        response = client.get(f"/api/v1/export/{what}.ndjson")
    assert isinstance(response, StreamingHttpResponse) and not reads_rows(answered)

    # then the first chunk holds one chunk of rows, written before the rest is read: the rows
    # come from a cursor still open on the server
    chunks = iter(response.streaming_content)
    with CaptureQueriesContext(connection) as first:
        head = next(chunks)
    assert len(head.decode().splitlines()) == 5
    assert len(first) == 1 and reads_rows(first)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_cursors WHERE is_holdable OR NOT is_holdable")
        open_cursors = [row[0] for row in cursor.fetchall()]
    assert any(f'_{table}"' in statement for statement in open_cursors), open_cursors
    with CaptureQueriesContext(connection) as rest:
        tail = b"".join(chunks)
    assert len(tail.decode().splitlines()) == 7 and len(rest) == 0


@pytest.mark.parametrize("what", WHAT)
def test_queries_do_not_grow_with_the_rows(what, requester, project, pool, ops):
    def queries_for_export():
        viewer = type(ops).objects.get(pk=ops.pk)  # a fresh user: roles read again
        with CaptureQueriesContext(connection) as ctx:
            response = _api(viewer).get(f"/api/v1/export/{what}.csv")
            rows = _csv(response)
        return len(ctx), len(rows)

    def add(n):
        for _ in range(n):
            req = factories.ComputeRequestFactory(
                requester=requester, project=project, pool=pool, status=Status.PENDING_DIVISION
            )
            allocation = factories.AllocationFactory(pool=pool, project=project)
            LedgerEntry.objects.create(
                allocation=allocation, kind="grant", gpus=8, start=allocation.start,
                end=allocation.end,
            )  # fmt: skip
            audit_record(actor=requester, action="request.create", obj=req)

    add(2)
    small, rows_small = queries_for_export()
    add(40)
    large, rows_large = queries_for_export()
    # the viewer's roles, then one query for the rows (a server-side cursor) whatever their
    # number
    assert rows_large >= rows_small + 40
    assert small == large <= 4


def test_the_pages_link_to_the_exports_with_their_filters(client, requester, project, pool, ops):
    # given a waiting request with its history
    req = factories.ComputeRequestFactory(
        requester=requester, project=project, pool=pool, status=Status.WAITING
    )
    audit_record(actor=requester, action="request.submit", obj=req)

    # the requests list links to the export of what it shows, every page, the same filters
    client.force_login(requester)
    page = client.get("/requests/", {"status": "waiting", "page": "1"}).content.decode()
    assert 'href="/api/v1/export/requests.csv?status=waiting"' in page
    assert 'href="/api/v1/export/requests.ndjson?status=waiting"' in page
    csv_rows = _csv(client.get("/api/v1/export/requests.csv?status=waiting"))
    assert [int(r["id"]) for r in csv_rows] == [req.pk]
    # the request page to its audit trail
    page = client.get(f"/requests/{req.pk}/").content.decode()
    link = (
        f"/api/v1/export/audit.csv?object_type=requests_app.computerequest&amp;object_id={req.pk}"
    )
    assert link in page
    (event,) = _csv(client.get(link.replace("&amp;", "&")))
    assert event["action"] == "request.submit"
    # the ops console and the usage page to the allocations, the ledger and the audit trail
    client.force_login(ops)
    page = client.get("/ops/").content.decode()
    for what in ("allocations", "ledger", "audit"):
        assert f'href="/api/v1/export/{what}.csv"' in page
    page = client.get("/ops/usage/").content.decode()
    assert 'href="/api/v1/export/allocations.csv"' in page
    assert 'href="/api/v1/export/ledger.csv"' in page
