"""/api/v1/requests/: representation, filing with every kind of bad input, edits, decisions."""

from datetime import timedelta

import pytest

from audit.models import AuditEvent
from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests import factories
from tests.requests_app.conftest import request_data

URL = "/api/v1/requests/"

FIELDS = {
    "id",
    "project",
    "pool",
    "gpus",
    "start",
    "end",
    "kind",
    "priority",
    "flexible_start",
    "goal",
    "expected_outcome",
    "size_rationale",
    "impact_if_denied",
    "status",
    "steps",
    "executive_reasons",
    "allocation",
    "queue_position",
    "target_allocation",
    "requester",
    "created_at",
}


def test_create_draft_and_representation(api, requester, project, pool):
    # when
    response = api(requester).post(URL, request_data(project, pool), format="json")

    # then
    assert response.status_code == 201, response.data
    body = response.json()
    assert set(body) >= FIELDS
    assert body["status"] == "draft"
    assert body["requester"] == requester.pk
    assert body["project"] == project.pk and body["pool"] == pool.pk
    assert body["steps"] == [] and body["executive_reasons"] == []
    assert body["allocation"] is None and body["queue_position"] is None
    assert body["start"].endswith(("Z", "+00:00"))
    assert AuditEvent.objects.filter(action="request.create", object_id=body["id"]).count() == 1


def test_read_only_fields_cannot_be_mass_assigned(api, requester, other_lead, project, pool):
    # when
    data = request_data(
        project,
        pool,
        status="approved",
        requester=other_lead.pk,
        steps=[{"stage": "division", "decision": "approved"}],
        round=5,
        executive_reasons=["none"],
        change=1,
    )
    response = api(requester).post(URL, data, format="json")

    # then
    assert response.status_code == 201
    req = ComputeRequest.objects.get(pk=response.json()["id"])
    assert (req.status, req.requester, req.round) == (Status.DRAFT, requester, 0)
    assert not req.steps.exists() and req.executive_reasons == [] and req.change is None


def _past(days):
    return factories.in_days(-days).isoformat()


BAD_INPUTS = [
    ("zero gpus", {"gpus": 0}, "gpus", "at least one GPU"),
    ("negative gpus", {"gpus": -4}, "gpus", "at least one GPU"),
    ("more than the pool holds", {"gpus": 65}, "gpus", "never hold more than 64"),
    ("not a number", {"gpus": "many"}, "gpus", "valid integer"),
    ("end before start", {"end": _past(-1)}, "end", "after the start"),
    ("start in the past", {"start": _past(2), "end": _past(-5)}, "start", "in the past"),
    ("unknown pool", {"pool": 999999}, "pool", "Unknown pool"),
    ("unknown project", {"project": 999999}, "project", "not a project of your teams"),
    ("empty goal", {"goal": "   "}, "goal", ""),
    ("empty impact", {"impact_if_denied": ""}, "impact_if_denied", ""),
    ("goal too long", {"goal": "x" * 4001}, "goal", "4000"),
    ("bad kind", {"kind": "gift"}, "kind", ""),
    ("bad priority", {"priority": "asap"}, "priority", ""),
    ("new with a target", {"target_allocation": 1}, "target_allocation", "Only an increase"),
    ("increase without target", {"kind": "increase"}, "target_allocation", "allocations"),
    ("null char", {"goal": "a\x00b"}, "goal", "Null"),
]


@pytest.mark.parametrize(
    ("case", "override", "field", "text"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_a_field_error_and_changes_nothing(
    api, requester, project, pool, case, override, field, text
):
    # when
    data = {**request_data(project, pool), **override}
    response = api(requester).post(URL, data, format="json")

    # then
    assert response.status_code == 400, response.data
    body = response.json()
    assert field in body["errors"], body
    assert text.lower() in " ".join(body["errors"][field]).lower()
    assert body["detail"]
    assert not ComputeRequest.objects.exists()


def test_foreign_project_is_refused_like_an_unknown_one(api, outsider, project, pool):
    # when paul (Applications) files for Research's Atlas
    response = api(outsider).post(URL, request_data(project, pool), format="json")

    # then
    assert response.status_code == 400
    assert response.json()["errors"]["project"] == [
        "Unknown project, or not a project of your teams."
    ]
    assert not ComputeRequest.objects.exists()


def test_gpus_limit_counts_future_arrivals(api, requester, project, pool):
    # given 64 more GPUs arrive next month
    factories.CapacityChangeFactory(pool=pool, delta=64, effective_at=factories.in_days(30))

    # when / then
    ok = api(requester).post(URL, request_data(project, pool, gpus=128), format="json")
    too_many = api(requester).post(URL, request_data(project, pool, gpus=129), format="json")
    assert ok.status_code == 201
    assert too_many.status_code == 400


def test_markup_is_stored_as_typed(api, requester, project, pool):
    # when
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    response = api(requester).post(URL, request_data(project, pool, goal=payload), format="json")

    # then it is kept as text; the JSON carries it as a string, never rendered
    assert response.status_code == 201
    assert response.json()["goal"] == payload


@pytest.fixture
def allocation(project, pool):
    return factories.AllocationFactory(
        pool=pool, project=project, gpus=16, start=factories.in_days(-5), end=factories.in_days(10)
    )


def test_extension_starts_where_its_allocation_ends(api, requester, project, pool, allocation):
    # when
    data = request_data(
        project,
        pool,
        kind="extension",
        target_allocation=allocation.pk,
        gpus=None,
        start=None,
        end=factories.in_days(20).isoformat(),
    )
    response = api(requester).post(URL, data, format="json")

    # then
    assert response.status_code == 201, response.data
    req = ComputeRequest.objects.get()
    assert (req.start, req.gpus, req.target_allocation) == (allocation.end, 16, allocation)


def test_extension_must_end_later(api, requester, project, pool, allocation):
    data = request_data(
        project, pool, kind="extension", target_allocation=allocation.pk, end=_past(-5)
    )
    response = api(requester).post(URL, data, format="json")
    assert response.status_code == 400
    assert "after the allocation's current end" in response.json()["errors"]["end"][0]


@pytest.mark.parametrize("which", ["other project", "other pool"])
def test_target_allocation_of_same_project_and_pool(api, requester, project, pool, team, which):
    # given an allocation of another project of the team, or in another pool
    if which == "other project":
        target = factories.AllocationFactory(pool=pool, project=factories.ProjectFactory(team=team))
    else:
        target = factories.AllocationFactory(
            pool=factories.PoolFactory(capacity=64), project=project
        )

    # when
    data = request_data(project, pool, kind="increase", target_allocation=target.pk)
    response = api(requester).post(URL, data, format="json")

    # then
    assert response.status_code == 400
    assert "same project and pool" in response.json()["errors"]["target_allocation"][0]


def test_increase_with_target(api, requester, project, pool, allocation):
    data = request_data(project, pool, kind="increase", target_allocation=allocation.pk)
    response = api(requester).post(URL, data, format="json")
    assert response.status_code == 201
    assert response.json()["target_allocation"] == allocation.pk


@pytest.mark.parametrize("status", [Status.DRAFT, Status.CHANGES_REQUESTED])
def test_update_while_editable(api, make_request, requester, status):
    # given
    req = make_request(status)

    # when
    patch = api(requester).patch(f"{URL}{req.pk}/", {"gpus": 12}, format="json")
    put = api(requester).put(
        f"{URL}{req.pk}/",
        request_data(req.project, req.pool, goal="Rewritten goal."),
        format="json",
    )

    # then
    assert patch.status_code == 200 and put.status_code == 200, (patch.data, put.data)
    req.refresh_from_db()
    assert (req.gpus, req.goal, req.status) == (8, "Rewritten goal.", status)


def test_bad_patch_changes_nothing(api, make_request, requester):
    # given
    req = make_request(Status.DRAFT)

    # when
    response = api(requester).patch(f"{URL}{req.pk}/", {"gpus": 0, "goal": "New"}, format="json")

    # then
    assert response.status_code == 400
    req.refresh_from_db()
    assert (req.gpus, req.goal) == (8, "Train the next model.")


@pytest.mark.parametrize(
    "status", [s for s in Status if s not in (Status.DRAFT, Status.CHANGES_REQUESTED)]
)
def test_update_refused_once_submitted(api, make_request, requester, status):
    # given
    req = make_request(status)

    # when
    response = api(requester).patch(f"{URL}{req.pk}/", {"gpus": 12}, format="json")

    # then
    assert response.status_code == 409
    assert "can be edited" in response.json()["detail"]
    req.refresh_from_db()
    assert req.gpus == 8


def test_full_flow_through_the_api(
    api, requester, division_lead, executive, research, project, pool
):
    # given Research's share covers the request, which is urgent
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    body = request_data(project, pool, priority="urgent")
    rid = api(requester).post(URL, body, format="json").json()["id"]

    # when
    submitted = api(requester).post(f"{URL}{rid}/submit/")
    first = api(division_lead).post(f"{URL}{rid}/approve/", {"comment": "Fine."}, format="json")
    second = api(executive).post(f"{URL}{rid}/approve/", {}, format="json")

    # then
    assert submitted.json()["status"] == "pending_division"
    assert submitted.json()["executive_reasons"] == ["is marked urgent"]
    assert first.json()["status"] == "pending_executive"
    assert second.status_code == 200
    body = second.json()
    assert body["status"] == "approved"
    assert [(s["stage"], s["decision"], s["decider"]) for s in body["steps"]] == [
        ("division", "approved", division_lead.pk),
        ("executive", "approved", executive.pk),
    ]
    assert body["steps"][0]["comment"] == "Fine."
    assert body["steps"][0]["time"]


def test_allocation_id_when_applied(api, make_request, requester):
    # given
    req = make_request(Status.ALLOCATED)

    # when
    body = api(requester).get(f"{URL}{req.pk}/").json()

    # then
    assert body["allocation"] == req.change.allocation_id


@pytest.mark.parametrize("action", ["reject", "request-changes"])
def test_comment_required(api, make_request, division_lead, action):
    # given
    req = make_request(Status.PENDING_DIVISION)

    # when
    response = api(division_lead).post(f"{URL}{req.pk}/{action}/", {}, format="json")

    # then
    assert response.status_code == 400
    assert "comment" in response.json()["errors"]
    req.refresh_from_db()
    assert req.status == Status.PENDING_DIVISION


def test_second_decision_is_a_conflict(api, make_request, division_lead, second_lead):
    # given lead 2 decided already
    req = make_request(Status.PENDING_DIVISION)
    assert api(second_lead).post(f"{URL}{req.pk}/approve/").status_code == 200

    # when
    response = api(division_lead).post(f"{URL}{req.pk}/reject/", {"comment": "no"}, format="json")

    # then
    assert response.status_code == 409
    assert "not waiting for a decision" in response.json()["detail"]


def test_submit_stale_draft_is_refused(api, make_request, requester):
    # given a draft whose start has passed
    req = make_request(Status.DRAFT, start=factories.in_days(-2), end=factories.in_days(5))

    # when
    response = api(requester).post(f"{URL}{req.pk}/submit/")

    # then
    assert response.status_code == 400
    assert "in the past" in response.json()["errors"]["start"][0]
    req.refresh_from_db()
    assert req.status == Status.DRAFT


def test_filters_and_search(api, make_request, requester, division_lead, pool, team, research):
    # given
    mine = make_request(Status.PENDING_DIVISION, goal="Scaling laws for sparse models")
    other_pool = factories.PoolFactory(capacity=64)
    theirs = make_request(
        Status.PENDING_DIVISION, pool=other_pool, requester=factories.UserFactory()
    )
    draft = make_request(Status.DRAFT)

    # when / then
    def ids(user, query):
        response = api(user).get(URL + query)
        assert response.status_code == 200
        return {r["id"] for r in response.json()["results"]}

    assert ids(requester, "?mine=true") == {mine.pk, draft.pk}
    assert ids(division_lead, "?status=pending_division") == {mine.pk, theirs.pk}
    assert ids(division_lead, f"?pool={other_pool.pk}") == {theirs.pk}
    assert ids(division_lead, "?q=sparse") == {mine.pk}
    assert ids(division_lead, f"?division={research.pk}&team={team.pk}") == {mine.pk, theirs.pk}
    assert ids(requester, "?status=draft&status=pending_division") == {mine.pk, theirs.pk, draft.pk}


def test_list_is_paginated(api, make_request, requester):
    for _ in range(3):
        make_request(Status.PENDING_DIVISION)
    body = api(requester).get(URL + "?page_size=2").json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]


def test_anonymous_is_refused(api):
    assert api().get(URL).status_code in (401, 403)


def test_start_and_end_accept_offsets(api, requester, project, pool):
    start = factories.in_days(3)
    data = request_data(
        project,
        pool,
        start=start.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")).isoformat(),
        end=(start + timedelta(days=1)).isoformat(),
    )
    response = api(requester).post(URL, data, format="json")
    assert response.status_code == 201
    assert ComputeRequest.objects.get().start == start


@pytest.mark.parametrize("n", [3, 30])
def test_api_list_queries_are_bounded(
    api, make_request, requester, team, n, django_assert_max_num_queries
):
    # given n requests in various states, some waiting (queue positions)
    states = [Status.PENDING_DIVISION, Status.WAITING, Status.ALLOCATED, Status.REJECTED]
    for i in range(n):
        make_request(states[i % 4], project=factories.ProjectFactory(team=team))
    client = api(requester)

    # then: roles (2), count, page, steps, queue positions — whatever n; forecasts: the stored
    # ones (1), and while stale their refresh (allocator/forecast/stored.py: the row lock, the
    # simulation's rows (6), the write)
    with django_assert_max_num_queries(20):
        response = client.get(URL)
    assert len(response.json()["results"]) == n


def test_detail_explains_why_a_lead_may_not_decide(web, make_request, division_lead):
    # given rlead may not decide the executive stage
    req = make_request(Status.PENDING_EXECUTIVE)

    # when
    page = web(division_lead).get(f"/requests/{req.pk}/").content.decode()

    # then no buttons, and the reason in words
    assert 'value="approve"' not in page
    assert "Only executives decide the executive review." in page


def test_every_field_error_comes_in_one_answer(api, requester, project, pool):
    # given a body with a rule error (gpus=0, an end before the start), a choice not offered
    # (priority) and a missing field (goal)
    data = request_data(project, pool, gpus=0, priority="asap")
    data["end"] = factories.in_days(1).isoformat()
    data["start"] = factories.in_days(3).isoformat()
    del data["goal"]

    # when
    response = api(requester).post(URL, data, format="json")

    # then one 400 names all four
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"gpus", "end", "priority", "goal"}
    assert errors["gpus"] == ["Ask for at least one GPU."]
    assert errors["end"] == ["The end must be after the start."]
    assert "not a valid choice" in errors["priority"][0]
    assert errors["goal"] == ["This field is required."]
    assert not ComputeRequest.objects.exists()


def test_every_field_error_of_a_patch_comes_in_one_answer(api, make_request):
    # given a draft
    req = make_request(Status.DRAFT)

    # when a patch sets a choice not offered, no GPUs and an end before the draft's start
    response = api(req.requester).patch(
        f"{URL}{req.pk}/",
        {"priority": "asap", "gpus": 0, "end": (req.start - timedelta(hours=1)).isoformat()},
        format="json",
    )

    # then all three at once; the fields not sent are not reported
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"priority", "gpus", "end"}
    assert errors["end"] == ["The end must be after the start."]
    req.refresh_from_db()
    assert (req.gpus, req.priority) != (0, "asap")
