from celery import shared_task


@shared_task(name="ops.tasks.beat_heartbeat", ignore_result=True)
def beat_heartbeat():
    from .health import heartbeat_record

    heartbeat_record(name="beat")


@shared_task(name="ops.tasks.audit_chain_link", ignore_result=True)
def audit_chain_link():
    """Link audit rows of the last day into the hash chain (ledger_verify links all)."""
    from datetime import timedelta

    from django.utils import timezone

    from .ledger import audit_chain_link as link

    link(since=timezone.now() - timedelta(days=1))
