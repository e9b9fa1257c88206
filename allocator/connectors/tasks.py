"""Thin Celery wrappers: ids only, services imported inside. Delivery is at-least-once
(acks_late); the services make a repeat harmless (an intent the last apply covers is a no-op)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from .slurm import SlurmError

# A scheduler that is down or slow, or a lost database connection: retried with backoff. The
# intent stays pending meanwhile, and the periodic sweep sends it again after the retries.
TRANSIENT = (SlurmError, OperationalError, InterfaceError)


@shared_task(
    name="connectors.tasks.apply_intent",
    acks_late=True,
    ignore_result=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=5,
)
def apply_intent(intent_id: int):
    from .intents import intent_apply

    return intent_apply(intent_id=intent_id).outcome


@shared_task(name="connectors.tasks.dispatch_due_intents", acks_late=True, ignore_result=True)
def dispatch_due_intents():
    from .intents import intents_dispatch_due

    return intents_dispatch_due()


@shared_task(name="connectors.tasks.reconcile_all", acks_late=True, ignore_result=True)
def reconcile_all():
    from .reconcile import connectors_reconcile_all

    return connectors_reconcile_all()


@shared_task(name="connectors.tasks.reconcile_pool", acks_late=True, ignore_result=True)
def reconcile_pool(connector_id: int, trigger: str = "on demand"):
    from .reconcile import connector_reconcile

    return connector_reconcile(connector_id=connector_id, trigger=trigger).outcome


@shared_task(name="connectors.tasks.collect_usage", acks_late=True, ignore_result=True)
def collect_usage():
    from .usage import usage_collect_all

    return usage_collect_all()
