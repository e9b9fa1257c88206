"""Thin Celery wrappers around requests_app/sla.py. A repeat is harmless: each reminder,
escalation and digest is recorded once (a unique row, a notification dedupe key)."""

from celery import shared_task


@shared_task(name="requests_app.tasks.approvals_sla_sweep", acks_late=True, ignore_result=True)
def approvals_sla_sweep():
    from .sla import approvals_sla_sweep as sweep

    sweep()


@shared_task(name="requests_app.tasks.approvals_digest", acks_late=True, ignore_result=True)
def approvals_digest():
    from .sla import approvals_digest as digest

    digest()
