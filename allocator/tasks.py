"""Thin Celery wrappers around allocator.services. Tasks take ids only and import the services
inside their bodies. Delivery is at-least-once (acks_late, requeue when a worker is lost — see
config/settings/base.py): the services make a repeat harmless. Nobody reads their results
(ignore_result): sending a task then needs the broker only, not the result backend, whose
reconnect loop would otherwise hold an approval for ~20 s when Redis is down."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

TRANSIENT = (OperationalError, InterfaceError)


@shared_task(
    name="allocator.tasks.apply_change",
    acks_late=True,
    ignore_result=True,
    # Only a lost connection, a deadlock or a serialization failure is worth retrying at once;
    # a bug is not. Every retry counts as an attempt (allocation_change_apply), so the total is
    # bounded by MAX_APPLY_ATTEMPTS whatever max_retries says.
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def apply_change(change_id: int):
    from . import services
    from .faults import fault_point

    try:
        outcome = services.allocation_change_apply(change_id=change_id)
    except TRANSIENT:
        raise
    except Exception as exc:
        # The apply's transaction rolled back; keep the error for compute ops (and mark the
        # change failed once its attempts are spent). The sweep sends it again otherwise.
        services.allocation_change_record_error(
            change_id=change_id, error=f"{type(exc).__name__}: {exc}"
        )
        raise
    fault_point("after_commit_before_ack", change_id=change_id)
    return outcome


@shared_task(name="allocator.tasks.expire_allocations", acks_late=True, ignore_result=True)
def expire_allocations():
    from . import services

    return services.allocations_expire()


@shared_task(name="allocator.tasks.serve_all_queues", acks_late=True, ignore_result=True)
def serve_all_queues():
    from . import services

    return services.queues_serve_all()


@shared_task(name="allocator.tasks.apply_due_reclaims", acks_late=True, ignore_result=True)
def apply_due_reclaims():
    from . import services

    return services.reclaims_apply_due()


@shared_task(name="allocator.tasks.resend_stuck_changes", acks_late=True, ignore_result=True)
def resend_stuck_changes():
    from . import services

    return services.changes_resend_stuck()


@shared_task(name="allocator.tasks.send_ending_reminders", acks_late=True, ignore_result=True)
def send_ending_reminders():
    from . import services

    return services.allocations_remind_ending()


@shared_task(name="allocator.tasks.refresh_forecast", acks_late=True, ignore_result=True)
def refresh_forecast(pool_id: int):
    """Sent after an apply commits: the pool's stored forecast, computed now rather than by
    the next reader. Idempotent (a fresh one is left alone)."""
    from .forecast import refresh

    refresh([pool_id])


@shared_task(name="allocator.tasks.refresh_stale_forecasts", acks_late=True, ignore_result=True)
def refresh_stale_forecasts():
    from .forecast import refresh_stale

    return refresh_stale()
