"""The security log (common/security.py): every refusal by policy and every refused write leaves
one `security` entry with user, method, path and reason; no secrets; no raw CR/LF."""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from rest_framework.test import APIClient

from common.security import encode
from tests import factories


@pytest.fixture
def security_log(caplog):
    caplog.set_level(logging.INFO, logger="security")

    def entries():
        return [r for r in caplog.records if r.name == "security"]

    return entries


def test_api_denial_is_logged_with_user_path_method_and_reason(security_log, requester, pool):
    # given a researcher who may not change capacity
    client = APIClient()
    client.force_authenticate(requester)
    # when they try
    body = {"pool": pool.pk, "kind": "arrival", "delta": 8, "effective_at": "2030-01-01T00:00Z"}
    response = client.post("/api/v1/capacity-changes/", body, format="json")
    # then one entry says who, what and why
    assert response.status_code == 403
    (entry,) = security_log()
    event = entry.security_event
    assert event["event"] == "denied" and event["status"] == 403
    assert event["user"] == requester.username
    assert event["method"] == "POST" and event["path"] == "/api/v1/capacity-changes/"
    assert event["reason"]
    assert requester.username in entry.getMessage()


def test_api_invisible_object_404_is_logged(security_log, outsider, project, pool, requester):
    # given a draft of another team
    req = factories.ComputeRequestFactory(requester=requester, project=project, pool=pool)
    client = APIClient()
    client.force_authenticate(outsider)
    # when an outsider asks for it
    response = client.get(f"/api/v1/requests/{req.pk}/")
    # then 404, logged
    assert response.status_code == 404
    assert [r.security_event["status"] for r in security_log()] == [404]


def test_api_validation_failure_on_write_is_logged_without_values(security_log, requester):
    client = APIClient()
    client.force_authenticate(requester)
    # when a write carries bad input (a secret-looking value in it)
    response = client.post(
        "/api/v1/requests/", {"gpus": "hunter2-secret", "justification": "x"}, format="json"
    )
    # then the entry names the fields, never the values
    assert response.status_code == 400
    (entry,) = security_log()
    assert entry.security_event["event"] == "validation_failed"
    assert "gpus" in entry.security_event["reason"]
    assert "hunter2" not in entry.getMessage()


def test_api_read_is_not_logged(security_log, requester):
    client = APIClient()
    client.force_authenticate(requester)
    assert client.get("/api/v1/requests/").status_code == 200
    assert security_log() == []


def test_anonymous_api_call_is_logged(security_log):
    response = APIClient().post("/api/v1/requests/", {}, format="json")
    assert response.status_code in (401, 403)
    assert [r.security_event["user"] for r in security_log()] == ["anonymous"]


def test_page_403_is_logged_with_the_reason(security_log, client, teammate, project, pool):
    # given a request of the team waiting for its division lead
    from requests_app.workflow import Status

    req = factories.ComputeRequestFactory(
        project=project, pool=pool, status=Status.PENDING_DIVISION, round=1
    )
    client.force_login(teammate)
    # when a teammate (no lead) tries to decide it through the page
    response = client.post(f"/requests/{req.pk}/decide/", {"action": "approve", "comment": "c"})
    # then 403 and an entry with the page's reason
    assert response.status_code == 403
    (entry,) = security_log()
    assert entry.security_event["path"] == f"/requests/{req.pk}/decide/"
    assert entry.security_event["reason"] not in ("", "HTTP 403")


def test_page_404_raised_by_a_view_is_logged(security_log, client, outsider, project, pool):
    req = factories.ComputeRequestFactory(project=project, pool=pool)
    client.force_login(outsider)
    assert client.get(f"/requests/{req.pk}/").status_code == 404
    assert [r.security_event["status"] for r in security_log()] == [404]


def test_csrf_failure_is_logged(security_log, requester):
    client = Client(enforce_csrf_checks=True)
    client.force_login(requester)
    assert client.post("/requests/new/", {}).status_code == 403
    assert len(security_log()) == 1


def test_crlf_in_user_and_path_is_encoded(security_log, pool):
    # given a user whose name carries CR/LF and a fake log line
    user = factories.UserFactory(username="eve\r\nWARNING security event=ok")
    client = APIClient()
    client.force_authenticate(user)
    # when they are refused on a path that carries CR/LF too
    client.post("/api/v1/capacity-changes/", {}, format="json")
    client.post("/requests/1%0d%0aFAKE/withdraw/", {})
    # then every entry is one line
    entries = security_log()
    assert entries
    for entry in entries:
        message = entry.getMessage()
        assert "\n" not in message and "\r" not in message
        assert "\\x0d\\x0a" in message


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("a\r\nb", "a\\x0d\\x0ab"),
        ("\x1b[31m", "\\x1b[31m"),
        ('q"uote\\', 'q\\"uote\\\\'),
        ("\u202eevil", "\\u202eevil"),
        ("\ud800", "\\ud800"),
        ("plain ümlaut", "plain ümlaut"),
    ],
)
def test_encode(raw, encoded):
    assert encode(raw) == encoded
