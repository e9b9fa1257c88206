"""B1 (PROOFS.md 2.4): a table of invalid payloads for every endpoint that takes a body, and for
every HTML form. Each one gets a clear, field-keyed error (400, or 413/415 for the body itself)
and changes nothing: the row counts and an md5 of every business table are the same after.

B3: query-string abuse on every list endpoint never answers 5xx, and the page size is capped."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.urls import reverse

from requests_app.models import JUSTIFICATION_MAX
from requests_app.workflow import Status
from tests import factories
from tests.support import figures

from .conftest import build_request, business_state, count_5xx, state_diff, valid_request_body

BIG = [2**31, 2**63, 10**100]
LONG = "x" * (JUSTIFICATION_MAX + 1)
MEGABYTE = "y" * (1024 * 1024)
BODY_ERRORS = {"body"}  # cases about the whole body: a clear detail, no field to name


@pytest.fixture
def world(requester, project, pool, division_lead, second_lead, executive, ops, outsider, research):
    other_project = factories.ProjectFactory(team=outsider.memberships.first().team, name="Other")
    ended = factories.ProjectFactory(team=project.team, name="Old", state="ended")
    draft = build_request(
        Status.DRAFT,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=second_lead,
    )
    pending = build_request(
        Status.PENDING_DIVISION,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=second_lead,
    )
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=16)
    foreign_allocation = factories.AllocationFactory(pool=pool, project=other_project, gpus=4)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    return {
        "requester": requester,
        "lead": division_lead,
        "executive": executive,
        "ops": ops,
        "project": project,
        "other_project": other_project,
        "ended": ended,
        "pool": pool,
        "draft": draft,
        "pending": pending,
        "allocation": allocation,
        "foreign_allocation": foreign_allocation,
        "division": research,
    }


def _create(w, **overrides):
    body = valid_request_body(w["project"], w["pool"])
    for key, value in overrides.items():
        if value is _MISSING:
            body.pop(key)
        else:
            body[key] = value
    return body


_MISSING = object()

# (id, actor, method, url-key, body builder, expected field or "body", statuses)
# A body builder takes the world and returns a dict/list to send as JSON, or a RawBody.


class RawBody:
    def __init__(self, data: bytes | str, content_type: str):
        self.data = data
        self.content_type = content_type


def _req(field, value):
    return lambda w: _create(w, **{field: value})


REQUEST_CREATE = [
    *[(f"gpus={v!r}", "gpus", v) for v in [-1, 0, 10**6, *BIG, 1.5, "eight", True, None, [8]]],
    ("gpus missing", "gpus", _MISSING),
    *[
        (f"start={v!r}", "start", v)
        for v in [
            "2026-02-30T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "",
            "yesterday",
            "2026-01-01T25:00:00Z",
            "2020-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
            12345,
        ]
    ],
    *[
        (f"end={v!r}", "end", v)
        for v in ["", "tomorrow", "2026-02-30T10:00:00Z", "10000-01-01T00:00:00Z", None]
    ],
    ("end missing", "end", _MISSING),
    *[
        (f"{f} {label}", f, v)
        for f in ["goal", "impact_if_denied"]
        for label, v in [
            ("max+1", LONG),
            ("1 MB", MEGABYTE),
            ("whitespace", "   \n\t "),
            ("NUL", "a\x00b"),
            ("lone surrogate", "a\ud800b"),
            ("missing", _MISSING),
            ("number", {"a": 1}),
        ]
    ],
    *[(f"pool={v!r}", "pool", v) for v in [999_999_999, "abc", -1, *BIG, None, 1.5]],
    *[(f"project={v!r}", "project", v) for v in [999_999_999, "abc", -1, 2**63, None]],
    ("kind=bogus", "kind", "bogus"),
    ("priority=extreme", "priority", "extreme"),
    ("flexible_start=maybe", "flexible_start", "maybe"),
    ("target_allocation on a new request", "target_allocation", 1),
]

CASES = []
for label, field, value in REQUEST_CREATE:
    CASES.append((f"create {label}", "requester", "post", "requests", _req(field, value), field))

CASES += [
    (
        "create foreign project",
        "requester",
        "post",
        "requests",
        lambda w: _create(w, project=w["other_project"].pk),
        "project",
    ),
    (
        "create ended project",
        "requester",
        "post",
        "requests",
        lambda w: _create(w, project=w["ended"].pk),
        "project",
    ),
    (
        "create end before start",
        "requester",
        "post",
        "requests",
        lambda w: _create(w, end="2026-01-01T00:00:00Z"),
        "end",
    ),
    (
        "create increase of a foreign allocation",
        "requester",
        "post",
        "requests",
        lambda w: _create(w, kind="increase", target_allocation=w["foreign_allocation"].pk),
        "target_allocation",
    ),
    (
        "create extension of 2^63",
        "requester",
        "post",
        "requests",
        lambda w: _create(w, kind="extension", target_allocation=2**63),
        "target_allocation",
    ),
    (
        "create duplicate keys, last invalid",
        "requester",
        "post",
        "requests",
        lambda w: RawBody(json.dumps(_create(w))[:-1] + ', "gpus": -5}', "application/json"),
        "gpus",
    ),
    (
        "create not JSON",
        "requester",
        "post",
        "requests",
        lambda w: RawBody("{not json", "application/json"),
        "body",
    ),
    ("create JSON array", "requester", "post", "requests", lambda w: [_create(w)], "body"),
    (
        "create JSON string",
        "requester",
        "post",
        "requests",
        lambda w: RawBody('"hello"', "application/json"),
        "body",
    ),
    (
        "create JSON null",
        "requester",
        "post",
        "requests",
        lambda w: RawBody("null", "application/json"),
        "body",
    ),
    (
        "create empty body",
        "requester",
        "post",
        "requests",
        lambda w: RawBody(b"", "application/json"),
        "body",
    ),
    (
        "create text/plain (415)",
        "requester",
        "post",
        "requests",
        lambda w: RawBody(json.dumps(_create(w)), "text/plain"),
        "body",
    ),
    (
        "create XML (415)",
        "requester",
        "post",
        "requests",
        lambda w: RawBody("<request/>", "application/xml"),
        "body",
    ),
    (
        "create too large (413)",
        "requester",
        "post",
        "requests",
        lambda w: RawBody(
            json.dumps(_create(w, goal="z" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10))),
            "application/json",
        ),
        "body",
    ),
    (
        "create invalid UTF-8",
        "requester",
        "post",
        "requests",
        lambda w: RawBody(b'{"goal": "\xff\xfe"}', "application/json"),
        "body",
    ),
    # Edits of a draft.
    ("update gpus=-1", "requester", "patch", "draft", lambda w: {"gpus": -1}, "gpus"),
    ("update gpus=2^63", "requester", "patch", "draft", lambda w: {"gpus": 2**63}, "gpus"),
    (
        "update end before start",
        "requester",
        "patch",
        "draft",
        lambda w: {"end": "2020-01-01T00:00:00Z"},
        "end",
    ),
    ("update goal blank", "requester", "patch", "draft", lambda w: {"goal": "  "}, "goal"),
    ("update goal NUL", "requester", "patch", "draft", lambda w: {"goal": "\x00"}, "goal"),
    ("update pool=abc", "requester", "patch", "draft", lambda w: {"pool": "abc"}, "pool"),
    (
        "update foreign project",
        "requester",
        "patch",
        "draft",
        lambda w: {"project": w["other_project"].pk},
        "project",
    ),
    (
        "update full PUT missing fields",
        "requester",
        "put",
        "draft",
        lambda w: {"gpus": 4},
        "project",
    ),
    ("update JSON array", "requester", "patch", "draft", lambda w: [1, 2], "body"),
    (
        "update 415",
        "requester",
        "patch",
        "draft",
        lambda w: RawBody("gpus=4", "text/plain"),
        "body",
    ),
    # Decisions.
    ("approve comment max+1", "lead", "post", "approve", lambda w: {"comment": LONG}, "comment"),
    ("approve comment NUL", "lead", "post", "approve", lambda w: {"comment": "ok\x00"}, "comment"),
    (
        "approve comment surrogate",
        "lead",
        "post",
        "approve",
        lambda w: {"comment": "\udfff"},
        "comment",
    ),
    (
        "approve comment object",
        "lead",
        "post",
        "approve",
        lambda w: {"comment": {"a": 1}},
        "comment",
    ),
    ("reject comment list", "lead", "post", "reject", lambda w: {"comment": ["x"]}, "comment"),
    (
        "request-changes comment 1 MB",
        "lead",
        "post",
        "request-changes",
        lambda w: {"comment": MEGABYTE},
        "comment",
    ),
    (
        "approve not JSON",
        "lead",
        "post",
        "approve",
        lambda w: RawBody("{{", "application/json"),
        "body",
    ),
    ("approve 415", "lead", "post", "approve", lambda w: RawBody("comment=ok", "text/csv"), "body"),
    (
        "withdraw comment 501",
        "requester",
        "post",
        "withdraw",
        lambda w: {"comment": "w" * 501},
        "comment",
    ),
    # Capacity changes (compute ops).
    *[
        (f"capacity {label}", "ops", "post", "capacity", fn, field)
        for label, field, fn in [
            ("pool=abc", "pool", lambda w: _cap(w, pool="abc")),
            ("pool missing", "pool", lambda w: _cap(w, pool=_MISSING)),
            ("pool unknown", "pool", lambda w: _cap(w, pool=999_999_999)),
            ("pool=2^63", "pool", lambda w: _cap(w, pool=2**63)),
            ("pool=0", "pool", lambda w: _cap(w, pool=0)),
            ("kind=gift", "kind", lambda w: _cap(w, kind="gift")),
            ("delta=2^31", "delta", lambda w: _cap(w, delta=2**31)),
            ("delta=10^100", "delta", lambda w: _cap(w, delta=10**100)),
            ("delta=x", "delta", lambda w: _cap(w, delta="x")),
            ("delta=1.5", "delta", lambda w: _cap(w, delta=1.5)),
            ("effective_at=Feb 30", "effective_at", lambda w: _cap(w, effective_at="2026-02-30")),
            (
                "effective_at=year 0",
                "effective_at",
                lambda w: _cap(w, effective_at="0000-01-01T00:00:00Z"),
            ),
            ("note 501", "note", lambda w: _cap(w, note="n" * 501)),
            ("note NUL", "note", lambda w: _cap(w, note="\x00")),
            (
                "decrease below holdings",
                "delta",
                lambda w: _cap(
                    w, kind="decommission", delta=-60, effective_at=factories.in_days(1).isoformat()
                ),
            ),
        ]
    ],
    ("capacity JSON array", "ops", "post", "capacity", lambda w: [_cap(w)], "body"),
    (
        "capacity 415",
        "ops",
        "post",
        "capacity",
        lambda w: RawBody("pool=1", "application/x-www-form-urlencoded; charset=utf-16"),
        "body",
    ),
    # Reclaims (compute ops).
    *[
        (f"reclaim {label}", "ops", "post", "reclaim", fn, field)
        for label, field, fn in [
            ("new_gpus=-1", "new_gpus", lambda w: _rec(new_gpus=-1)),
            ("new_gpus=2^63", "new_gpus", lambda w: _rec(new_gpus=2**63)),
            ("new_gpus more than held", "new_gpus", lambda w: _rec(new_gpus=64)),
            ("new_gpus missing", "new_gpus", lambda w: _rec(new_gpus=_MISSING)),
            ("reason missing", "reason", lambda w: _rec(reason=_MISSING)),
            ("reason blank", "reason", lambda w: _rec(reason="")),
            ("reason 2001", "reason", lambda w: _rec(reason="r" * 2001)),
            ("notice=-5", "notice", lambda w: _rec(notice=-5)),
            ("notice=10^100", "notice", lambda w: _rec(notice=10**100)),
            ("new_end=bogus", "new_end", lambda w: _rec(new_end="soon")),
            ("transfer_to=x", "transfer_to", lambda w: _rec(transfer_to="x")),
            ("transfer_to=2^63", "transfer_to", lambda w: _rec(transfer_to=2**63)),
            ("transfer_to unknown", "transfer_to", lambda w: _rec(transfer_to=999_999_999)),
        ]
    ],
    # Shares (executives).
    *[
        (f"share {label}", "executive", "post", "share", fn, field)
        for label, field, fn in [
            ("pool=abc", "pool", lambda w: {"pool": "abc", "gpus": 10}),
            ("pool=0", "pool", lambda w: {"pool": 0, "gpus": 10}),
            ("pool unknown", "pool", lambda w: {"pool": 999_999_999, "gpus": 10}),
            ("pool=10^100", "pool", lambda w: {"pool": 10**100, "gpus": 10}),
            ("gpus=-1", "gpus", lambda w: {"pool": w["pool"].pk, "gpus": -1}),
            ("gpus=10^100", "gpus", lambda w: {"pool": w["pool"].pk, "gpus": 10**100}),
            ("gpus=lots", "gpus", lambda w: {"pool": w["pool"].pk, "gpus": "lots"}),
            ("gpus missing", "gpus", lambda w: {"pool": w["pool"].pk}),
            ("gpus=null", "gpus", lambda w: {"pool": w["pool"].pk, "gpus": None}),
        ]
    ],
    # Projects (team members).
    *[
        (f"project {label}", "requester", "post", "projects", fn, field)
        for label, field, fn in [
            ("name blank", "name", lambda w: _proj(w, name="   ")),
            ("name 121", "name", lambda w: _proj(w, name="n" * 121)),
            ("name NUL", "name", lambda w: _proj(w, name="a\x00")),
            ("name surrogate", "name", lambda w: _proj(w, name="\ud800")),
            ("name taken", "name", lambda w: _proj(w, name="ATLAS")),
            ("description 5001", "description", lambda w: _proj(w, description="d" * 5001)),
            ("team=abc", "team", lambda w: _proj(w, team="abc")),
            ("team=2^63", "team", lambda w: _proj(w, team=2**63)),
            ("team unknown", "team", lambda w: _proj(w, team=999_999_999)),
            ("expected_end Feb 30", "expected_end", lambda w: _proj(w, expected_end="2026-02-30")),
            ("confidential=maybe", "confidential", lambda w: _proj(w, confidential="maybe")),
        ]
    ],
    ("token username missing", None, "post", "token", lambda w: {"password": "x"}, "username"),
    (
        "token password object",
        None,
        "post",
        "token",
        lambda w: {"username": "rita", "password": {"x": 1}},
        "password",
    ),
    (
        "token wrong password",
        None,
        "post",
        "token",
        lambda w: {"username": "rita", "password": "wrong"},
        "non_field_errors",
    ),
]


def _cap(w, **overrides):
    body = {
        "pool": w["pool"].pk,
        "kind": "arrival",
        "delta": 8,
        "effective_at": "2030-01-01T00:00:00Z",
        "note": "rack 7",
    }
    for key, value in overrides.items():
        if value is _MISSING:
            body.pop(key)
        else:
            body[key] = value
    return body


def _rec(**overrides):
    body = {"new_gpus": 8, "reason": "Needed elsewhere.", "notice": 72}
    for key, value in overrides.items():
        if value is _MISSING:
            body.pop(key)
        else:
            body[key] = value
    return body


def _proj(w, **overrides):
    body = {"name": "Zephyr", "team": w["project"].team_id, "description": "d"}
    body.update(overrides)
    return body


def _url(w, key):
    return {
        "requests": "/api/v1/requests/",
        "draft": f"/api/v1/requests/{w['draft'].pk}/",
        "approve": f"/api/v1/requests/{w['pending'].pk}/approve/",
        "reject": f"/api/v1/requests/{w['pending'].pk}/reject/",
        "request-changes": f"/api/v1/requests/{w['pending'].pk}/request-changes/",
        "withdraw": f"/api/v1/requests/{w['pending'].pk}/withdraw/",
        "capacity": "/api/v1/capacity-changes/",
        "reclaim": f"/api/v1/allocations/{w['allocation'].pk}/reclaim/",
        "share": f"/api/v1/divisions/{w['division'].pk}/share/",
        "projects": "/api/v1/projects/",
        "token": "/api/v1/auth/token/",
    }[key]


NESTED = "[" * 3000
# Issue 14: deeply nested JSON made the parser recurse into a 500; times without a zone were
# read as UTC (PRODUCT.md section 6 says times carry one).
CASES += [
    (
        f"{target} nested JSON",
        actor,
        method,
        target,
        lambda w: RawBody(NESTED, "application/json"),
        "body",
    )
    for target, actor, method in [
        ("requests", "requester", "post"),
        ("draft", "requester", "patch"),
        ("approve", "lead", "post"),
        ("capacity", "ops", "post"),
        ("reclaim", "ops", "post"),
        ("share", "executive", "post"),
        ("projects", "requester", "post"),
    ]
]
CASES += [
    (
        "request start without zone",
        "requester",
        "post",
        "requests",
        lambda w: _create(w, start="2030-01-01T10:00:00"),
        "start",
    ),
    (
        "request end without zone",
        "requester",
        "post",
        "requests",
        lambda w: _create(w, end="2030-02-01T10:00:00"),
        "end",
    ),
    (
        "update end without zone",
        "requester",
        "patch",
        "draft",
        lambda w: {"end": "2030-02-01T10:00:00"},
        "end",
    ),
    (
        "capacity effective_at without zone",
        "ops",
        "post",
        "capacity",
        lambda w: _cap(w, effective_at="2030-01-01T00:00:00"),
        "effective_at",
    ),
    (
        "reclaim new_end without zone",
        "ops",
        "post",
        "reclaim",
        lambda w: _rec(new_end="2030-01-01T00:00:00"),
        "new_end",
    ),
]


def send(client, method, url, payload):
    if isinstance(payload, RawBody):
        return getattr(client, method)(url, data=payload.data, content_type=payload.content_type)
    return getattr(client, method)(url, data=json.dumps(payload), content_type="application/json")


@pytest.mark.parametrize(
    ("label", "actor", "method", "target", "build", "field"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_bad_api_input_is_refused_by_field_and_changes_nothing(
    api, world, label, actor, method, target, build, field
):
    # given
    client = api(world[actor] if actor else None)
    payload = build(world)
    before = business_state()
    # when
    response = send(client, method, _url(world, target), payload)
    # then
    figures.add("bad inputs tried")
    count_5xx(response)
    after = business_state()
    changed = state_diff(before, after)
    if changed:
        figures.add("state changes caused by rejected input")
    assert response.status_code in (400, 413, 415), (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
    if field != "body":
        messages = body.get("errors", {}).get(field)
        if not messages or not all(isinstance(m, str) and m.strip() for m in messages):
            figures.add("errors without a field-specific message")
        assert messages, f"no message for {field}: {body}"
    assert not changed, f"rejected input changed {changed}"


def test_the_table_has_at_least_80_cases():
    assert len(CASES) >= 80


def test_too_large_body_answers_413(api, world):
    # given a body over DATA_UPLOAD_MAX_MEMORY_SIZE
    payload = _create(world, goal="z" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10))
    # when
    response = send(api(world["requester"]), "post", "/api/v1/requests/", payload)
    # then
    assert response.status_code == 413
    assert response.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "text/csv"])
def test_wrong_content_type_answers_415(api, world, content_type):
    response = send(
        api(world["requester"]),
        "post",
        "/api/v1/requests/",
        RawBody(json.dumps(_create(world)), content_type),
    )
    assert response.status_code == 415


# --- mass assignment: read-only fields are ignored, never applied ---

PROTECTED = {
    "status": "approved",
    "requester": "OTHER",
    "steps": [{"stage": "division", "decision": "approved"}],
    "allocation": 1,
    "queue_position": 1,
    "round": 7,
    "needs_executive": False,
    "executive_reasons": [],
    "approved_at": "2020-01-01T00:00:00Z",
    "submitted_at": "2020-01-01T00:00:00Z",
    "change": 1,
    "id": 999_999,
    "capacity": 10**6,
}


@pytest.mark.parametrize("field", sorted(PROTECTED))
def test_mass_assignment_on_create_is_ignored(api, world, outsider, field):
    # given a valid body carrying a read-only field
    value = outsider.pk if PROTECTED[field] == "OTHER" else PROTECTED[field]
    body = _create(world, **{field: value})
    # when
    response = send(api(world["requester"]), "post", "/api/v1/requests/", body)
    # then it is filed as a draft of the caller, the field ignored
    figures.add("mass-assignment fields tried")
    count_5xx(response)
    assert response.status_code in (201, 400)
    if response.status_code == 201:
        created = response.json()
        accepted = (
            created["status"] != "draft"
            or created["requester"] != world["requester"].pk
            or created["steps"]
            or created["allocation"] is not None
            or created["round"] != 0
            or created["id"] == 999_999
        )
        if accepted:
            figures.add("mass-assignment fields accepted")
        assert not accepted, created


@pytest.mark.parametrize("field", sorted(PROTECTED))
def test_mass_assignment_on_update_changes_nothing(api, world, outsider, field):
    # given a draft
    value = outsider.pk if PROTECTED[field] == "OTHER" else PROTECTED[field]
    before = business_state()
    # when a PATCH carries only a read-only field
    response = send(api(world["requester"]), "patch", _url(world, "draft"), {field: value})
    # then nothing changes
    figures.add("mass-assignment fields tried")
    count_5xx(response)
    assert response.status_code in (200, 400)
    changed = state_diff(before, business_state())
    if changed:
        figures.add("mass-assignment fields accepted")
    assert not changed


@pytest.mark.parametrize(
    ("url_key", "actor", "body"),
    [
        ("capacity", "ops", {"capacity": 10**6, "allocated": 0}),
        ("share", "executive", {"division": 999, "before": 0, "capacity_now": 1}),
        ("projects", "requester", {"state": "ended", "id": 5, "created_at": "2020-01-01"}),
        ("reclaim", "ops", {"status": "applied", "allocation": 1, "effective_at": "2020-01-01"}),
    ],
)
def test_mass_assignment_elsewhere_is_ignored(api, world, url_key, actor, body):
    # given a valid body plus read-only fields
    valid = {
        "capacity": _cap(world),
        "share": {"pool": world["pool"].pk, "gpus": 20},
        "projects": _proj(world),
        "reclaim": _rec(),
    }[url_key]
    # when
    response = send(api(world[actor]), "post", _url(world, url_key), {**valid, **body})
    # then the valid part applies and the read-only part does not
    figures.add("mass-assignment fields tried", len(body))
    count_5xx(response)
    assert response.status_code in (200, 201), response.content
    data = response.json()
    leaked = [
        key
        for key, value in body.items()
        if key in data and data[key] == value and key not in ("allocation",)
    ]
    if url_key == "reclaim":
        leaked += ["effective_at"] if data["effective_at"].startswith("2020") else []
        leaked += ["allocation"] if data["allocation"] != world["allocation"].pk else []
    if leaked:
        figures.add("mass-assignment fields accepted", len(leaked))
    assert not leaked, data


# --- pages: inline errors, nothing changes ---


def _form_errors(response, key):
    form = response.context[key]
    return form.errors


REQUEST_FORM_OK = {
    "kind": "new",
    "gpus": "8",
    "priority": "normal",
    "goal": "g",
    "expected_outcome": "o",
    "size_rationale": "s",
    "impact_if_denied": "i",
}


def _request_form(w, **overrides):
    start = factories.in_days(2)
    data = {
        **REQUEST_FORM_OK,
        "project": str(w["project"].pk),
        "pool": str(w["pool"].pk),
        "start": start.strftime("%Y-%m-%dT%H:%M"),
        "end": factories.in_days(10).strftime("%Y-%m-%dT%H:%M"),
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not _MISSING}


PAGE_CASES = [
    *[
        (f"request form {label}", "requester", "requests:create", None, "form", fn, field)
        for label, field, fn in [
            ("gpus=-1", "gpus", lambda w: _request_form(w, gpus="-1")),
            ("gpus=2^63", "gpus", lambda w: _request_form(w, gpus=str(2**63))),
            ("gpus=10^100", "gpus", lambda w: _request_form(w, gpus=str(10**100))),
            ("gpus=eight", "gpus", lambda w: _request_form(w, gpus="eight")),
            ("start=Feb 30", "start", lambda w: _request_form(w, start="2026-02-30T10:00")),
            ("end before start", "end", lambda w: _request_form(w, end="2020-01-01T00:00")),
            ("goal NUL", "goal", lambda w: _request_form(w, goal="a\x00b")),
            ("goal max+1", "goal", lambda w: _request_form(w, goal=LONG)),
            ("goal blank", "goal", lambda w: _request_form(w, goal="   ")),
            ("pool=abc", "pool", lambda w: _request_form(w, pool="abc")),
            ("pool=2^63", "pool", lambda w: _request_form(w, pool=str(2**63))),
            (
                "foreign project",
                "project",
                lambda w: _request_form(w, project=str(w["other_project"].pk)),
            ),
            ("kind=bogus", "kind", lambda w: _request_form(w, kind="bogus")),
        ]
    ],
    (
        "edit form gpus=0",
        "requester",
        "requests:edit",
        "draft",
        "form",
        lambda w: _request_form(w, gpus="0"),
        "gpus",
    ),
    (
        "edit form end=bogus",
        "requester",
        "requests:edit",
        "draft",
        "form",
        lambda w: _request_form(w, end="soon"),
        "end",
    ),
    (
        "decision form action=bogus",
        "lead",
        "requests:decide",
        "pending",
        "decision_form",
        lambda w: {"action": "bogus", "comment": ""},
        "action",
    ),
    (
        "decision form comment max+1",
        "lead",
        "requests:decide",
        "pending",
        "decision_form",
        lambda w: {"action": "approve", "comment": LONG},
        "comment",
    ),
    (
        "decision form comment NUL",
        "lead",
        "requests:decide",
        "pending",
        "decision_form",
        lambda w: {"action": "reject", "comment": "\x00"},
        "comment",
    ),
    *[
        (f"capacity form {label}", "ops", "allocator:ops-capacity", None, "capacity_form", fn, f)
        for label, f, fn in [
            ("delta=10^100", "delta", lambda w: _cap_form(w, delta=str(10**100))),
            ("delta=x", "delta", lambda w: _cap_form(w, delta="x")),
            ("pool=abc", "pool", lambda w: _cap_form(w, pool="abc")),
            ("pool unknown", "pool", lambda w: _cap_form(w, pool="999999999")),
            ("effective_at bogus", "effective_at", lambda w: _cap_form(w, effective_at="x")),
            ("note 501", "note", lambda w: _cap_form(w, note="n" * 501)),
            (
                "decrease below holdings",
                "delta",
                lambda w: _cap_form(
                    w,
                    kind="decommission",
                    delta="-60",
                    effective_at=factories.in_days(1).strftime("%Y-%m-%dT%H:%M"),
                ),
            ),
        ]
    ],
    *[
        (f"reclaim form {label}", "ops", "allocator:ops-reclaim", None, "reclaim_form", fn, f)
        for label, f, fn in [
            ("allocation unknown", "allocation", lambda w: _rec_form(w, allocation="999999999")),
            ("allocation=2^63", "allocation", lambda w: _rec_form(w, allocation=str(2**63))),
            ("new_gpus=-1", "new_gpus", lambda w: _rec_form(w, new_gpus="-1")),
            ("reason blank", "reason", lambda w: _rec_form(w, reason="")),
        ]
    ],
    *[
        (f"share form {label}", "executive", "allocator:balance", None, "form", fn, f)
        for label, f, fn in [
            ("gpus=-1", "gpus", lambda w: _share_form(w, gpus="-1")),
            ("gpus=10^100", "gpus", lambda w: _share_form(w, gpus=str(10**100))),
            ("gpus=lots", "gpus", lambda w: _share_form(w, gpus="lots")),
            ("pool=abc", "pool", lambda w: _share_form(w, pool="abc")),
        ]
    ],
]


def _cap_form(w, **overrides):
    data = {
        "pool": str(w["pool"].pk),
        "kind": "arrival",
        "delta": "8",
        "effective_at": "2030-01-01T00:00",
        "note": "rack",
    }
    data.update(overrides)
    return {f"capacity-{k}": v for k, v in data.items()}  # the form's prefix


def _rec_form(w, **overrides):
    data = {
        "allocation": str(w["allocation"].pk),
        "new_gpus": "8",
        "notice_hours": "72",
        "reason": "Needed.",
    }
    data.update(overrides)
    return {f"reclaim-{k}": v for k, v in data.items()}  # the form's prefix


def _share_form(w, **overrides):
    data = {"division": str(w["division"].pk), "pool": str(w["pool"].pk), "gpus": "20"}
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("label", "actor", "url_name", "obj", "form_key", "build", "field"),
    PAGE_CASES,
    ids=[c[0] for c in PAGE_CASES],
)
def test_bad_form_input_shows_inline_errors_and_changes_nothing(
    client, world, label, actor, url_name, obj, form_key, build, field
):
    # given
    client.force_login(world[actor])
    url = reverse(url_name, args=[world[obj].pk] if obj else [])
    before = business_state()
    # when
    response = client.post(url, build(world))
    # then
    figures.add("bad inputs tried")
    count_5xx(response)
    changed = state_diff(before, business_state())
    if changed:
        figures.add("state changes caused by rejected input")
    assert response.status_code == 400, response.status_code
    errors = _form_errors(response, form_key)
    if not errors.get(field):
        figures.add("errors without a field-specific message")
    assert errors.get(field), f"no inline error for {field}: {errors.as_data()}"
    assert 'class="errorlist' in response.content.decode()
    assert not changed, f"rejected input changed {changed}"


# --- B3: query-string abuse on list endpoints ---

LIST_URLS = [
    "/api/v1/requests/",
    "/api/v1/pools/",
    "/api/v1/allocations/",
    "/api/v1/capacity-changes/",
    "/api/v1/divisions/",
    "/api/v1/teams/",
    "/api/v1/projects/",
    "/api/v1/audit/",
    "/api/v1/notifications/",
]
PAGE_LIST_URLS = [
    "/requests/",
    "/requests/inbox/",
    "/pools/",
    "/projects/",
    "/notifications/",
]
QUERIES = [
    "page=0",
    "page=-1",
    f"page={10**100}",
    "page=abc",
    "page=%00",
    f"page_size={10**9}",
    "page_size=-5",
    "page_size=abc",
    "ordering=password",
    "ordering=-requester__password",
    "ordering=__class__",
    "ordering=%00",
    "search=%00",
    "search=%ED%A0%80",
    "search=" + "a" * 5000,
    "status=bogus",
    "pool=abc",
    f"pool={2**63}",
    f"project={10**100}",
    "project=-1",
    "division=abc",
    "mine=maybe",
    "active_at=yesterday",
    "effective_after=2026-02-30",
    "since=%00",
    "object_id=abc",
    f"object_id={10**100}",
    "kind=%00",
    "state=%ff",
    "confidential=maybe",
    "team=1.5",
    "unread=maybe",
    # Python takes UTC offsets up to 23:59, PostgreSQL only up to 15:59.
    "since=2027-01-01T10:00:00%2B23:19",
    "until=0306-07-06T14:47:43.1-23:59",
    "active_at=2027-01-01T10:00:00%2B20:00",
    "effective_before=2027-01-01T10:00:00-18:00",
]


@pytest.mark.parametrize("url", LIST_URLS)
def test_list_endpoint_query_abuse_never_5xx(api, world, url):
    client = api(world["executive"])
    for query in QUERIES:
        response = client.get(f"{url}?{query}")
        figures.add("bad inputs tried")
        count_5xx(response)
        assert response.status_code < 500, (url, query, response.status_code)
        assert response.status_code in (200, 400, 404), (url, query, response.status_code)
        if response.status_code == 200 and "results" in response.json():
            assert len(response.json()["results"]) <= 200


@pytest.mark.parametrize("url", PAGE_LIST_URLS)
def test_list_page_query_abuse_never_5xx(client, world, url):
    client.force_login(world["executive"])
    for query in QUERIES:
        response = client.get(f"{url}?{query}")
        figures.add("bad inputs tried")
        count_5xx(response)
        assert response.status_code < 500, (url, query, response.status_code)


def test_page_size_is_capped(api, world, requester, project, pool, second_lead):
    # given more requests than the page holds
    for _ in range(3):
        build_request(
            Status.PENDING_DIVISION,
            requester=requester,
            project=project,
            pool=pool,
            division_decider=second_lead,
        )
    client = api(world["executive"])
    # when asking for a billion per page, then it is refused, naming page_size (not clamped)
    response = client.get("/api/v1/requests/?page_size=1000000000")
    count_5xx(response)
    assert response.status_code == 400
    assert "from 1 to 1000" in response.json()["errors"]["page_size"][0]
    # and the cap itself is served
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("common.pagination.CursorPagination.max_page_size", 2)
        assert client.get("/api/v1/requests/?page_size=3").status_code == 400
        response = client.get("/api/v1/requests/?page_size=2")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


def test_ordering_by_private_field_is_refused(api, world, requester, outsider, project, pool):
    client = api(world["executive"])
    # when ordering by fields that are not offered (a password, a private relation)
    for ordering in ["requester__password", "-requester__password", "steps__comment", "__class__"]:
        response = client.get(f"/api/v1/requests/?ordering={ordering}")
        figures.add("bad inputs tried")
        count_5xx(response)
        # then it is refused, naming the orders offered, and nothing is listed
        assert response.status_code == 400
        body = response.json()
        assert "results" not in body
        assert "Order by one of: created_at, gpus, id, start" in body["errors"]["ordering"][0]


def test_extension_until_year_9999_is_answered_without_error(api, world):
    response = send(
        api(world["requester"]),
        "post",
        "/api/v1/requests/",
        _create(world, end="9999-12-31T23:59:59Z"),
    )
    count_5xx(response)
    assert response.status_code in (201, 400)


def test_extreme_utc_offsets_are_stored_in_utc(api, client, world):
    """A UTC offset PostgreSQL does not take (+23:19) is still a valid time: it is filed, in UTC,
    through the API and the form alike, never a 500."""
    when = "2030-01-01T10:00:00+23:19"
    response = send(
        api(world["requester"]),
        "post",
        "/api/v1/requests/",
        _create(world, start=when, end="2030-02-01T10:00:00-23:00"),
    )
    count_5xx(response)
    assert response.status_code == 201, response.content
    assert response.json()["start"] == "2029-12-31T10:41:00Z"
    client.force_login(world["requester"])
    response = client.post(
        reverse("requests:create"), _request_form(world, start=when, end="2030-02-01T10:00+20:00")
    )
    count_5xx(response)
    assert response.status_code == 302
    response = client.post(
        reverse("allocator:ops-capacity"), _cap_form(world, effective_at="2030-01-01T10:00+23:00")
    )
    assert response.status_code == 403 or response.status_code < 500


def test_too_many_fields_answers_json_400(api, world):
    """Django refuses a form body with more than DATA_UPLOAD_MAX_NUMBER_FIELDS fields before any
    view runs; under /api/ that answer is JSON too."""
    body = "&".join(f"ids={i}" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 5))
    response = send(
        api(world["requester"]),
        "post",
        "/api/v1/notifications/mark-read/",
        RawBody(body, "application/x-www-form-urlencoded"),
    )
    count_5xx(response)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]


OUT_OF_RANGE_FILTERS = [
    ("/api/v1/capacity-changes/", "effective_after", "0001-01-01T00:00:00+05:00"),
    ("/api/v1/capacity-changes/", "effective_before", "9999-12-31T23:59:59-05:00"),
    ("/api/v1/allocations/", "active_at", "9999-12-31T23:59:59-05:00"),
    ("/api/v1/allocations/", "active_at", "0001-01-01T00:00:00+05:00"),
    ("/api/v1/audit/", "since", "0001-01-01T00:00:00+05:00"),
    ("/api/v1/audit/", "until", "9999-12-31T23:59:59-05:00"),
    ("/api/v1/allocations/", "active_at", "2030-01-01T00:00:00"),
    ("/api/v1/audit/", "since", "2030-01-01T00:00:00"),
]


@pytest.mark.parametrize(("url", "param", "value"), OUT_OF_RANGE_FILTERS)
def test_filter_times_out_of_range_or_without_zone_answer_400_naming_the_parameter(
    api, world, url, param, value
):
    response = api(world["ops"]).get(url, {param: value})
    count_5xx(response)
    assert response.status_code == 400, response.content
    assert param in response.json()["errors"], response.json()
