"""Tell people things, in the app and by email (Django's email framework). Emails go out after
the transaction commits, so a rolled-back change never mails anyone."""

import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.utils import timezone

from ops import instruments

from .models import Notification

logger = logging.getLogger(__name__)


def notify(
    *,
    recipients: Iterable,
    kind: str,
    message: str,
    link: str = "",
    dedupe_key: str | None = None,
    email: bool = True,
) -> list[Notification]:
    """One notification per recipient (duplicates and None skipped), written with one INSERT
    whatever the number of recipients — the engine calls this while it holds a pool's lock.
    With a `dedupe_key`, a recipient who already has that key gets nothing new (INSERT ... ON
    CONFLICT DO NOTHING on the (recipient, dedupe_key) constraint: a concurrent twin waits for
    the first and then skips). Emails go to the newly notified recipients after the commit.
    Returns the notifications created."""
    users = list({u.pk: u for u in recipients if u is not None}.values())
    if not users:
        return []
    text = message[:500]
    now = timezone.now()
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (recipient_id, kind, message, link, created_at, dedupe_key)
            SELECT r, %s, %s, %s, %s, %s FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(r, n)
            ORDER BY n
            ON CONFLICT (recipient_id, dedupe_key) DO NOTHING
            RETURNING id, recipient_id
            """,
            [kind, text, link, now, dedupe_key, [u.pk for u in users]],
        )
        rows = cursor.fetchall()
    by_pk = {u.pk: u for u in users}
    created = [
        Notification(
            pk=pk,
            recipient=by_pk[recipient_id],
            kind=kind,
            message=text,
            link=link,
            created_at=now,
            dedupe_key=dedupe_key,
        )
        for pk, recipient_id in sorted(rows)
    ]
    for note in created:
        note._state.adding = False
        note._state.db = connection.alias
    addresses = [n.recipient.email for n in created if n.recipient.email] if email else []
    if addresses:
        transaction.on_commit(lambda: _send_emails(addresses, message, link))
    return created


def _send_emails(addresses: list[str], message: str, link: str) -> None:
    """One email per person, addressed to them (a To: line a mail filter and a person can trust),
    all handed to the mail server over one connection after the commit. Never raises: the change
    it reports is committed already."""
    body = message + (f"\n\n{link}" if link else "")
    subject = f"[Allotment] {message[:70]}"
    try:
        with get_connection() as mail:
            mail.send_messages(
                [
                    EmailMessage(
                        subject=subject,
                        body=body,
                        from_email=settings.DEFAULT_FROM_EMAIL,
                        to=[address],
                        connection=mail,
                    )
                    for address in addresses
                ]
            )
    except Exception:  # an unreachable mail server must not undo a committed decision
        instruments.notification_emails.labels("failed").inc(len(addresses))
        logger.exception("could not send a notification email to %d people", len(addresses))
    else:
        instruments.notification_emails.labels("sent").inc(len(addresses))


def notifications_mark_read(*, user, ids: Iterable[int] | None = None) -> int:
    from django.utils import timezone

    qs = Notification.objects.filter(recipient=user, read_at__isnull=True)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs.update(read_at=timezone.now())
