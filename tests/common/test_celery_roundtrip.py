"""The round trip the product relies on: a task sent through the real Redis broker is executed by
a real `celery worker` process."""

import pytest
from django.conf import settings

from config.celery import app, ping

pytestmark = pytest.mark.worker


def test_broker_is_real_redis():
    assert settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    assert not app.conf.task_always_eager


def test_task_round_trip_through_real_worker(celery_worker_process):
    # given a worker process started by the test
    # when a task is sent through the broker
    result = ping.delay("hello")
    # then that worker ran it and stored the result
    assert result.get(timeout=20) == "hello"
    assert "config.ping" in celery_worker_process.log_path.read_text()


def test_reliability_settings():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility >= 2 * app.conf.task_time_limit
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit
