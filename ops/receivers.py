"""Counts events into telemetry/instruments.py: Celery tasks (in the worker that runs them) and the
engine's outcomes (allocator.signals.change_settled, inside the apply transaction)."""

from __future__ import annotations

import time

from celery import signals as celery_signals
from django.dispatch import receiver

from allocator.signals import change_settled
from notifications.signals import email_given_up
from telemetry import instruments

_started: dict[str, float] = {}


@celery_signals.task_prerun.connect
def _task_started(task_id=None, **kwargs):
    _started[task_id] = time.monotonic()


@celery_signals.task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **kwargs):
    started = _started.pop(task_id, None)
    name = getattr(task, "name", "unknown")
    if started is not None:
        instruments.celery_task_duration.labels(name).observe(time.monotonic() - started)
    instruments.celery_tasks.labels(name, state or "UNKNOWN").inc()


@receiver(change_settled)
def _change_settled(sender, *, change, outcome, **kwargs):
    instruments.change_outcomes.labels(outcome).inc()
    if outcome == "applied" and change.applied_at and change.approved_at:
        # Counted when the transaction commits: a rolled-back apply allocated nothing.
        seconds = (change.applied_at - change.approved_at).total_seconds()
        from django.db import transaction

        transaction.on_commit(lambda: instruments.approval_to_allocated.observe(max(seconds, 0)))


@receiver(email_given_up)
def _email_given_up(sender, *, email, **kwargs):
    """On the record for compute ops (inside the transaction that gives the email up)."""
    from audit.services import audit_record

    audit_record(
        actor=None,
        action="email.given_up",
        obj=email,
        after={"state": email.state, "attempts": email.attempts, "last_error": email.last_error},
        message=f"Email to {email.address} given up after {email.attempts} attempts.",
    )


def _bind_task_ids(sender=None, task=None, logger=None, **kwargs):
    """A task's log lines name the object it works on (the apply task takes `change_id`)."""
    import structlog

    ids = {k: v for k, v in (task.request.kwargs or {}).items() if k.endswith("_id")}
    if not ids and task.request.args and task.name == "allocator.tasks.apply_change":
        ids = {"change_id": task.request.args[0]}
    if ids:
        structlog.contextvars.bind_contextvars(**ids)


def _connect_structlog_metadata():
    from django_structlog.celery import signals as structlog_signals

    structlog_signals.bind_extra_task_metadata.connect(_bind_task_ids)


_connect_structlog_metadata()


@celery_signals.worker_init.connect
def _serve_worker_metrics(**kwargs):
    """A worker's own /metrics on CELERY_METRICS_PORT (a worker pod has no web server): the
    task counters of every pool process of this worker (multiprocess mode)."""
    import os

    port = os.environ.get("CELERY_METRICS_PORT")
    if not port:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    registry = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(
        int(port),
        addr=os.environ.get("CELERY_METRICS_ADDR", "0.0.0.0"),
        **({"registry": registry} if registry else {}),
    )
