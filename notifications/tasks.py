"""Thin Celery wrapper: the periodic sweep of the email outbox."""

from datetime import timedelta

from celery import shared_task


@shared_task(name="notifications.tasks.send_due_emails", ignore_result=True)
def send_due_emails():
    """Notices whose after-commit send never ran (the process died right after the commit),
    then every recorded email due for a (re)try: failed sends after their backoff, and claims
    that lapsed because their sender died."""
    from .services import emails_send_due, notifications_email_due

    return notifications_email_due(older_than=timedelta(minutes=2)) + emails_send_due()
