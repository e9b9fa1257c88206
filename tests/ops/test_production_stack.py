"""The stack a deployment runs: gunicorn (config/gunicorn.py, several worker processes) and a
Celery worker, with metrics in prometheus_client's multiprocess mode. After a journey (an
executive approves over HTTP, the worker applies), /metrics shows it in numbers."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from requests_app.workflow import Status
from tests.proofs.reliability import make_executives, pending_executive, token_for
from tests.support.proofs import wait_for
from tests.support.web import Gunicorn
from tests.support.workers import Worker, purge_test_broker

pytestmark = [pytest.mark.worker]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "allotment-dashboard.json"


@pytest.fixture
def stack(transactional_db, tmp_path):
    purge_test_broker()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    # gunicorn first: its arbiter empties the metrics folder when it starts.
    web = Gunicorn(workers=2, extra_env={**env, "METRICS_ALLOWED_NETWORKS": "127.0.0.1/32"})
    web.start()
    worker = Worker(extra_env=env).start()
    yield web, worker
    worker.kill()
    web.stop()


def _post(url: str, token: str) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps({"comment": ""}).encode(),
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def _samples(text: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_a_journey(stack, pool, project, requester, division_lead):
    web, worker = stack
    # given a request waiting for an executive, for GPUs from now on
    (executive,) = make_executives(1, prefix="mx")
    req = pending_executive(
        requester=requester,
        project=project,
        pool=pool,
        lead=division_lead,
        gpus=2,
        start=timezone.now(),
    )
    # when the executive approves it through gunicorn and the worker applies it
    assert _post(f"{web.url}/api/v1/requests/{req.pk}/approve/", token_for(executive)) == 200
    assert wait_for(lambda: req.__class__.objects.get(pk=req.pk).status == Status.ALLOCATED, 30), (
        worker.log_tail()
    )

    # then a scrape of any web process shows the pool, the HTTP call and the worker's task. The
    # task is counted once it returns, a moment after its commit made the request allocated
    # (it then sends the pool's forecast refresh): scrape until the count is there.
    def scrape():
        with urllib.request.urlopen(f"{web.url}/metrics", timeout=30) as response:
            assert response.status == 200
            return _samples(response.read().decode())

    def apply_counted(samples) -> bool:
        return (
            _value(
                samples,
                "allotment_celery_tasks_total",
                task="allocator.tasks.apply_change",
                state="SUCCESS",
            )
            >= 1
        )

    samples = scrape()
    deadline = time.monotonic() + 10
    while not apply_counted(samples) and time.monotonic() < deadline:
        time.sleep(0.2)
        samples = scrape()
    pool_gpus = {
        state: _value(samples, "allotment_pool_gpus", pool="east/H100", state=state)
        for state in ("capacity", "held", "free", "waiting")
    }
    assert pool_gpus == {"capacity": 64, "held": 2, "free": 62, "waiting": 0}
    assert (
        _value(samples, "allotment_division_gpus_held", division="Research", pool="east/H100") == 2
    )
    assert _value(samples, "allotment_pool_queue_depth", pool="east/H100") == 0
    assert (
        _value(
            samples,
            "allotment_http_requests_total",
            view="request-approve",
            method="POST",
            status="200",
        )
        == 1
    )
    assert (
        _value(samples, "allotment_http_request_duration_seconds_count", view="request-approve")
        == 1
    )
    assert (
        _value(
            samples,
            "allotment_celery_tasks_total",
            task="allocator.tasks.apply_change",
            state="SUCCESS",
        )
        >= 1
    )
    assert (
        _value(
            samples,
            "allotment_celery_task_duration_seconds_count",
            task="allocator.tasks.apply_change",
        )
        >= 1
    )
    assert _value(samples, "allotment_approval_to_allocated_seconds_count") == 1
    assert _value(samples, "allotment_change_outcomes_total", outcome="applied") == 1
    assert _value(samples, "allotment_changes", status="applied") == 1
    assert _value(samples, "allotment_apply_attempts_total") >= 1
    assert _value(samples, "allotment_notification_emails_total", result="sent") >= 1
    # and every series the Grafana dashboard plots is in the scrape
    dashboard = json.loads(DASHBOARD.read_text())
    plotted = {
        name
        for p in dashboard["panels"]
        for t in p["targets"]
        for name in re.findall(r"\b(allotment_[a-z_]+)", t["expr"])
    }
    assert plotted <= {name for name, _ in samples}, plotted - {name for name, _ in samples}


def test_metrics_are_refused_outside_the_allowed_networks(client, db):
    # given production settings: no network allowed, a token set
    ops = {"METRICS_ALLOWED_NETWORKS": [], "METRICS_TOKEN": "scrape-me-please"}
    with override_settings(ALLOTMENT_OPS=ops):
        # then a caller without the token is refused, also from loopback
        assert client.get("/metrics").status_code == 403
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
        # and Prometheus with the token gets the text format
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me-please")
        assert response.status_code == 200
        assert b"allotment_pool_gpus" in response.content
    with override_settings(ALLOTMENT_OPS={"METRICS_ALLOWED_NETWORKS": ["127.0.0.0/8"]}):
        assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
        assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


def test_the_demo_settings_open_metrics_to_loopback():
    from config.settings import demo

    assert demo.ALLOTMENT_OPS["METRICS_ALLOWED_NETWORKS"] == ["127.0.0.0/8", "::1/128"]
