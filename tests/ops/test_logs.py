"""Structured logs: JSON lines with the request's id, the user and the object ids, carried into
the Celery task the request sends; no secrets or justification text."""

import json
import logging
import uuid

import pytest
import structlog
from rest_framework.authtoken.models import Token

from tests.proofs.reliability import make_executives, pending_executive
from tests.support.proofs import wait_for
from tests.support.requests import valid_request_body


@pytest.fixture
def json_lines():
    """What the configured handler writes, captured as parsed JSON lines."""
    import io

    from django.conf import settings

    buffer = io.StringIO()
    formatter_config = settings.LOGGING["formatters"]["structured"]
    formatter = formatter_config["()"](
        processors=formatter_config["processors"],
        foreign_pre_chain=formatter_config["foreign_pre_chain"],
    )
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        structlog.contextvars.clear_contextvars()


SECRET_GOAL = "ZEBRA-confidential-goal-7781"


def test_a_request_logs_json_with_its_id_user_and_no_secrets(
    client, json_lines, requester, project, pool
):
    # given a signed-in researcher with an API token
    token = Token.objects.create(user=requester)
    request_id = str(uuid.uuid4())
    # when they file a request whose justification is confidential, with a token
    response = client.post(
        "/api/v1/requests/",
        valid_request_body(
            project,
            pool,
            goal=SECRET_GOAL,
            expected_outcome=SECRET_GOAL,
            size_rationale=SECRET_GOAL,
            impact_if_denied=SECRET_GOAL,
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
        HTTP_X_REQUEST_ID=request_id,
    )
    assert response.status_code == 201, response.content
    # and a refused call lands in the security log
    client.post(
        f"/api/v1/requests/{response.json()['id']}/approve/",
        {"comment": ""},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
        HTTP_X_REQUEST_ID=request_id,
    )
    # then every line is JSON; the request's lines carry its id, the user and the view
    lines = json_lines()
    mine = [line for line in lines if line.get("request_id") == request_id]
    finished = [line for line in mine if line["event"] == "request_finished"]
    assert len(finished) == 2, lines
    assert finished[0]["user_id"] == requester.pk
    assert finished[0]["code"] == 201
    assert any(line.get("view") for line in mine)
    security = [line for line in mine if line.get("logger") == "security"]
    assert security and security[0]["security_event"]["status"] == 403
    # and neither the justification nor the token is anywhere
    text = "\n".join(json.dumps(line) for line in lines)
    assert SECRET_GOAL not in text
    assert token.key not in text


def test_redaction_drops_sensitive_fields(json_lines):
    structlog.get_logger("ops.test").info("signed_in", password="hunter2", goal=SECRET_GOAL)
    (line,) = [line for line in json_lines() if line["event"] == "signed_in"]
    assert line["password"] == "[redacted]" and line["goal"] == "[redacted]"


@pytest.mark.worker
def test_the_request_id_follows_the_approval_into_the_worker(
    celery_worker_process, client, requester, project, pool, division_lead
):
    # given a request waiting for an executive
    (executive,) = make_executives(1, prefix="logx")
    req = pending_executive(
        requester=requester, project=project, pool=pool, lead=division_lead, gpus=2
    )
    token = Token.objects.create(user=executive)
    request_id = f"req-{uuid.uuid4()}"
    # when the executive approves with a request id
    response = client.post(
        f"/api/v1/requests/{req.pk}/approve/",
        {"comment": ""},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
        HTTP_X_REQUEST_ID=request_id,
    )
    assert response.status_code == 200, response.content
    req.refresh_from_db()
    # then the worker's JSON log lines for the apply carry that id and the change id
    log = celery_worker_process.log_path

    def applied_lines():
        found = []
        for raw in log.read_text().splitlines():
            if request_id in raw:
                line = json.loads(raw)
                # The apply's own line: the forecast refresh it sends after its commit carries
                # the same ids, as a child task (parent_task_id).
                if line.get("event") == "task_succeeded" and "parent_task_id" not in line:
                    found.append(line)
        return found

    assert wait_for(lambda: applied_lines(), 30), log.read_text()[-3000:]
    (line,) = applied_lines()
    assert line["change_id"] == req.change_id
    assert line["request_id"] == request_id
    assert SECRET_GOAL not in log.read_text()
