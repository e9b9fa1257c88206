"""Tell people things, in the app and by email (Django's email framework). Each notification
row records whether an email is due (an outbox); the emails go out after the transaction
commits, so a rolled-back change never mails anyone, and a periodic sweep sends what an
after-commit call never sent."""

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.utils import timezone

from telemetry import instruments

from .models import Notification
from .wording import subject_line

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
    the first and then skips). The row records that an email is due (the outbox); after the
    commit the due emails go out, one per person for everything committed together.
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
            INSERT INTO {table}
                (recipient_id, kind, message, link, created_at, dedupe_key, email_due)
            SELECT r, %s, %s, %s, %s, %s, d
            FROM unnest(%s::bigint[], %s::boolean[]) WITH ORDINALITY AS u(r, d, n)
            ORDER BY n
            ON CONFLICT (recipient_id, dedupe_key) DO NOTHING
            RETURNING id, recipient_id, email_due
            """,
            [
                kind,
                text,
                link,
                now,
                dedupe_key,
                [u.pk for u in users],
                [bool(email and u.email) for u in users],
            ],
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
            email_due=due,
        )
        for pk, recipient_id, due in sorted(rows)
    ]
    for note in created:
        note._state.adding = False
        note._state.db = connection.alias
    due_to = {n.recipient_id for n in created if n.email_due}
    if due_to:
        _email_due_on_commit(due_to)
    return created


class _EmailDueAfterCommit:
    """The after-commit send of one transaction: every notify() in it adds its recipients here,
    so a transaction that notifies many times (the apply engine's batch: one notice per change)
    sends once, one email per person."""

    def __init__(self, recipient_ids: set[int]):
        self.recipient_ids = recipient_ids

    def __call__(self) -> None:
        notifications_email_due(recipient_ids=sorted(self.recipient_ids))


def _email_due_on_commit(recipient_ids: set[int]) -> None:
    conn = transaction.get_connection()
    if conn.in_atomic_block:
        # The callbacks Django keeps for this transaction (a savepoint rolled back drops its
        # own; a recipient left in a kept one costs nothing: the send claims only what is due).
        for _savepoints, callback, _robust in conn.run_on_commit:
            if isinstance(callback, _EmailDueAfterCommit):
                callback.recipient_ids |= recipient_ids
                return
    transaction.on_commit(_EmailDueAfterCommit(set(recipient_ids)))


def notifications_email_due(
    *, recipient_ids: Iterable[int] | None = None, older_than: timedelta | None = None
) -> int:
    """Send the emails the outbox says are due: one per person, listing every notice of theirs
    that is due (a digest when several went out together), addressed To: them, all over one mail
    connection. Rows are claimed (email_due cleared) in one UPDATE before sending, so two callers
    never send the same notice twice; a failed send is logged, not retried. `recipient_ids`
    limits it to those people (the after-commit call); `older_than` to notices due for that long
    (the periodic sweep for emails whose after-commit call was lost). Returns emails sent."""
    table = Notification._meta.db_table
    where: list[str] = ["email_due"]
    params: list[Any] = []
    if recipient_ids is not None:
        where.append("recipient_id = ANY(%s)")
        params.append(list(recipient_ids))
    if older_than is not None:
        where.append("created_at < %s")
        params.append(timezone.now() - older_than)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET email_due = false WHERE {' AND '.join(where)} "
            "RETURNING id, recipient_id, message, link",
            params,
        )
        rows = sorted(cursor.fetchall())
    if not rows:
        return 0
    by_person: dict[int, list[tuple[str, str]]] = {}
    for _pk, recipient_id, message, link in rows:
        by_person.setdefault(recipient_id, []).append((message, link))
    people = get_user_model().objects.in_bulk(list(by_person))
    messages = [
        _email(people[pk].email, notices)
        for pk, notices in by_person.items()
        if pk in people and people[pk].email
    ]
    try:
        with get_connection() as mail:
            for message in messages:
                message.connection = mail
            mail.send_messages(messages)
    except Exception:  # an unreachable mail server must not undo a committed decision
        instruments.notification_emails.labels("failed").inc(len(messages))
        logger.exception("could not send notification emails to %d people", len(messages))
        return 0
    instruments.notification_emails.labels("sent").inc(len(messages))
    return len(messages)


def absolute_url(link: str) -> str:
    """A link a mail client can open: the site's address (ALLOTMENT_SITE_URL) joined to the
    app's own path; other links are kept as they are."""
    if not link or not link.startswith("/") or link.startswith("//"):
        return link
    return settings.ALLOTMENT_SITE_URL.rstrip("/") + link


def _email(address: str, notices: list[tuple[str, str]]) -> EmailMessage:
    if len(notices) == 1:
        message, link = notices[0]
        subject = subject_line(message)
        body = message + (f"\n\n{absolute_url(link)}" if link else "")
    else:
        subject = subject_line(f"{len(notices)} notices: {notices[0][0]}")
        parts = [f"{len(notices)} notices for you from Allotment:"]
        for i, (message, link) in enumerate(notices, 1):
            parts.append(f"{i}. {message}" + (f"\n   {absolute_url(link)}" if link else ""))
        body = "\n\n".join(parts)
    return EmailMessage(
        subject=subject, body=body, from_email=settings.DEFAULT_FROM_EMAIL, to=[address]
    )


def notifications_mark_read(*, user, ids: Iterable[int] | None = None) -> int:
    from django.utils import timezone

    qs = Notification.objects.filter(recipient=user, read_at__isnull=True)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs.update(read_at=timezone.now())
