"""Thin Celery wrapper: the periodic sweep of the email outbox."""

from datetime import timedelta

from celery import shared_task


@shared_task(name="notifications.tasks.send_due_emails", ignore_result=True)
def send_due_emails():
    """Emails whose after-commit send never ran (the process died right after the commit)."""
    from .services import notifications_email_due

    return notifications_email_due(older_than=timedelta(minutes=2))
