"""/healthz (liveness), /readyz (readiness) and the worker health check (PRODUCT.md 9)."""

import json

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from ops.health import Check, heartbeat_record
from ops.models import Heartbeat
from tests.support.proofs import use_broker


def backlog_of_250():
    return 250


def failing_extension():
    return Check("slurm_reachable", False, {"cluster": "east"})


def _ops(**overrides):
    return override_settings(ALLOTMENT_OPS={**settings.ALLOTMENT_OPS, **overrides})


def test_healthz_answers_without_sign_in_or_queries(client):
    # No `db` fixture: pytest-django makes any query here an error.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_when_every_dependency_answers(client, db):
    # given beat's heartbeat was just recorded by a worker
    heartbeat_record(name="beat")
    # when the orchestrator asks
    response = client.get("/readyz")
    # then every check passed, with detail an operator can read
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {
        "database",
        "migrations",
        "broker",
        "beat",
        "connector_backlog",
        "email_outbox",
    }
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["migrations"]["pending"] == 0
    assert body["checks"]["beat"]["age_seconds"] < 60


def test_readyz_tells_no_secrets(client, db):
    heartbeat_record(name="beat")
    text = client.get("/readyz").content.decode()
    for secret in (settings.SECRET_KEY, settings.CELERY_BROKER_URL, "postgres://", "redis://"):
        assert secret not in text


def test_readyz_is_not_ready_without_a_beat_heartbeat(client, db):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["beat"] == {
        "ok": False,
        "age_seconds": None,
        "max_age_seconds": 120,
        "required": True,
        "ms": response.json()["checks"]["beat"]["ms"],
    }


def test_readyz_is_not_ready_with_a_stale_heartbeat(client, db):
    from datetime import timedelta

    from django.utils import timezone

    Heartbeat.objects.create(name="beat", at=timezone.now() - timedelta(minutes=5))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["beat"]["age_seconds"] >= 299


def test_readyz_is_not_ready_when_the_broker_is_down(client, db):
    heartbeat_record(name="beat")
    with use_broker("redis://127.0.0.1:1/0"):  # nothing listens on port 1
        response = client.get("/readyz")
    broker = response.json()["checks"]["broker"]
    assert response.status_code == 503
    assert broker["ok"] is False and broker["error"]
    assert "127.0.0.1:1" not in response.content.decode()


def test_a_connector_backlog_above_its_limit_is_not_ready(client, db):
    heartbeat_record(name="beat")
    with _ops(CONNECTOR_BACKLOG="tests.ops.test_health.backlog_of_250", CONNECTOR_BACKLOG_MAX=100):
        response = client.get("/readyz")
    assert response.status_code == 503
    check = response.json()["checks"]["connector_backlog"]
    assert (check["ok"], check["backlog"], check["max"]) == (False, 250, 100)


def test_an_extension_check_counts(client, db):
    heartbeat_record(name="beat")
    with _ops(READINESS_CHECKS=["tests.ops.test_health.failing_extension"]):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["failing_extension"]["cluster"] == "east"


def test_readiness_can_require_fewer_checks(client, db):
    # the beat heartbeat is missing, but this web tier is told to need only the database
    with _ops(READINESS_REQUIRED=["database", "migrations"]):
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["beat"]["ok"] is False


@pytest.mark.worker
def test_worker_health_answers_only_for_a_running_worker(celery_worker_process, capsys):
    # when an orchestrator runs the check for a running worker
    call_command("worker_health", "--name", celery_worker_process.name + "@*", "--timeout", "5")
    # then it exits 0 (call_command raised nothing), naming the worker
    answered = json.loads(capsys.readouterr().out)["answered"]
    assert answered and answered[0].startswith(celery_worker_process.name + "@")
    # and for a worker that does not exist it exits 1
    with pytest.raises(SystemExit) as exit_info:
        call_command("worker_health", "--name", "nobody@nowhere", "--timeout", "1")
    assert exit_info.value.code == 1
    assert json.loads(capsys.readouterr().out)["answered"] == []


@override_settings(SECURE_SSL_REDIRECT=True, ALLOWED_HOSTS=["allotment.example.org"])
def test_probes_answer_a_pod_ip_over_plain_http(client):
    # the kubelet probes http://<pod ip>:8000/healthz: no redirect, no host refusal
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    # while the app itself still refuses that host
    assert client.get("/accounts/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400
