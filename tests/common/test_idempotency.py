"""Idempotency-Key (common/idempotency.py) on the request API's create and decisions: one effect
per key, replayed answers, 422 for a reused key with another body, 409 while the first is still
running."""

import threading

import pytest
from django.db import connection, transaction

from audit.models import AuditEvent
from common.models import IdempotencyRecord
from requests_app.models import ApprovalStep, ComputeRequest
from requests_app.workflow import Status
from tests.requests_app import conftest as requests_fixtures
from tests.requests_app.conftest import request_data
from tests.support import figures

# The request fixtures, shared with tests/requests_app.
api = requests_fixtures.api
make_request = requests_fixtures.make_request
second_lead = requests_fixtures.second_lead

URL = "/api/v1/requests/"


def test_create_twice_with_one_key_creates_once(api, requester, project, pool):
    # given
    client = api(requester)
    body = request_data(project, pool)

    # when
    first = client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    # then
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert ComputeRequest.objects.count() == 1
    assert AuditEvent.objects.filter(action="request.create").count() == 1


def test_same_key_different_body_is_422(api, requester, project, pool):
    # given
    client = api(requester)
    client.post(URL, request_data(project, pool), format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    # when
    response = client.post(
        URL, request_data(project, pool, gpus=9), format="json", HTTP_IDEMPOTENCY_KEY="k-2"
    )

    # then
    assert response.status_code == 422
    assert "different request" in response.json()["detail"]
    assert ComputeRequest.objects.count() == 1


def test_same_key_on_another_endpoint_is_422(api, make_request, division_lead):
    # given
    a = make_request(Status.PENDING_DIVISION)
    b = make_request(Status.PENDING_DIVISION)
    client = api(division_lead)
    client.post(f"{URL}{a.pk}/approve/", {}, format="json", HTTP_IDEMPOTENCY_KEY="k-3")

    # when
    response = client.post(f"{URL}{b.pk}/approve/", {}, format="json", HTTP_IDEMPOTENCY_KEY="k-3")

    # then
    assert response.status_code == 422
    b.refresh_from_db()
    assert b.status == Status.PENDING_DIVISION


def test_keys_are_per_user(api, requester, teammate, project, pool):
    # when two users happen to pick the same key
    body = request_data(project, pool)
    api(requester).post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="same")
    response = api(teammate).post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="same")

    # then both act
    assert response.status_code == 201
    assert ComputeRequest.objects.count() == 2


def test_decision_replayed_not_repeated(api, make_request, division_lead):
    # given
    req = make_request(Status.PENDING_DIVISION)
    client = api(division_lead)

    # when the client retries its approval
    first = client.post(f"{URL}{req.pk}/approve/", {}, format="json", HTTP_IDEMPOTENCY_KEY="d-1")
    again = client.post(f"{URL}{req.pk}/approve/", {}, format="json", HTTP_IDEMPOTENCY_KEY="d-1")

    # then one decision, and the retry gets the first answer instead of a 409
    assert first.status_code == again.status_code == 200
    assert again.json()["status"] == "approved"
    assert ApprovalStep.objects.filter(request=req).count() == 1


def test_failure_is_not_remembered(api, requester, project, pool):
    # given a bad body sent with a key
    client = api(requester)
    bad = client.post(
        URL, request_data(project, pool, gpus=0), format="json", HTTP_IDEMPOTENCY_KEY="k-4"
    )
    assert bad.status_code == 400

    # when it is fixed and sent again with the same key
    good = client.post(URL, request_data(project, pool), format="json", HTTP_IDEMPOTENCY_KEY="k-4")

    # then
    assert good.status_code == 201
    assert IdempotencyRecord.objects.get(key="k-4").status_code == 201


def test_key_too_long_is_400(api, requester, project, pool):
    response = api(requester).post(
        URL, request_data(project, pool), format="json", HTTP_IDEMPOTENCY_KEY="x" * 256
    )
    assert response.status_code == 400
    assert not ComputeRequest.objects.exists()


def test_without_key_nothing_is_stored(api, requester, project, pool):
    api(requester).post(URL, request_data(project, pool), format="json")
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_while_first_runs_is_409(api, requester, project, pool):
    # given a first call holding the key in an open transaction (it has not finished)
    holding, release = threading.Event(), threading.Event()

    def first_call():
        with transaction.atomic():
            IdempotencyRecord.objects.create(
                user=requester, key="busy", method="POST", path=URL, request_hash="x"
            )
            holding.set()
            release.wait(20)
        connection.close()

    thread = threading.Thread(target=first_call)
    thread.start()
    assert holding.wait(10)

    # when the duplicate arrives
    try:
        response = api(requester).post(
            URL, request_data(project, pool), format="json", HTTP_IDEMPOTENCY_KEY="busy"
        )
    finally:
        release.set()
        thread.join(20)

    # then it is told to come back later, and did nothing
    assert response.status_code == 409
    assert "in progress" in response.json()["detail"]
    assert not ComputeRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_act_once(api, requester, project, pool):
    # given two identical calls racing
    body = request_data(project, pool)
    barrier = threading.Barrier(2)
    codes = []

    def call():
        barrier.wait()
        try:
            codes.append(
                api(requester)
                .post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="race")
                .status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    # then one request exists; the other call replayed it (or was told it is in progress)
    figures.add("idempotency-key replays raced", len(codes))
    figures.add("idempotency-key duplicates created", ComputeRequest.objects.count() - 1)
    assert ComputeRequest.objects.count() == 1
    assert sorted(codes) in ([201, 201], [201, 409])
