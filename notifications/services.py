"""Tell people things, in the app and by email (Django's email framework). Each notification
row records whether an email is due; after the transaction commits, the due notices become
recorded emails (`Email` rows: the outbox) and those are sent, so a rolled-back change never
mails anyone. A periodic task sends what an after-commit call never sent and retries failed
sends with backoff; a claim on each row keeps two senders from sending one email twice."""

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.utils import timezone

from telemetry import instruments

from .models import Email, Notification
from .signals import email_given_up
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
    """Turn the notices the outbox says are due into emails and send them: one per person,
    listing every notice of theirs that is due (a digest when several went out together),
    addressed To: them. In one transaction the notices are claimed (email_due cleared) and the
    emails recorded (Email rows, `pending`), so a notice is composed once and its email is on
    record before anything is sent; then they are sent (emails_send_due), and one that fails is
    retried later. `recipient_ids` limits it to those people (the after-commit call);
    `older_than` to notices due for that long (the periodic sweep for emails whose after-commit
    call was lost). Returns the emails sent now."""
    table = Notification._meta.db_table
    where: list[str] = ["email_due"]
    params: list[Any] = []
    if recipient_ids is not None:
        where.append("recipient_id = ANY(%s)")
        params.append(list(recipient_ids))
    if older_than is not None:
        where.append("created_at < %s")
        params.append(timezone.now() - older_than)
    with transaction.atomic():
        with connection.cursor() as cursor:
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
        now = timezone.now()
        emails = Email.objects.bulk_create(
            [
                Email(
                    recipient_id=pk,
                    address=people[pk].email,
                    next_attempt_at=now,
                    **_composed(notices),
                )
                for pk, notices in by_person.items()
                if pk in people and people[pk].email
            ]
        )
    return emails_send_due(ids=[e.pk for e in emails]) if emails else 0


def _email_setting(key: str) -> Any:
    defaults = {"MAX_ATTEMPTS": 6, "RETRY_SECONDS": 60, "RETRY_MAX_SECONDS": 3600}
    defaults["CLAIM_SECONDS"] = 600
    return getattr(settings, "ALLOTMENT_EMAIL", {}).get(key, defaults[key])


def email_retry_delay(attempts: int) -> timedelta:
    """Backoff after the `attempts`-th failed send: doubling from RETRY_SECONDS, capped."""
    seconds = _email_setting("RETRY_SECONDS") * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, _email_setting("RETRY_MAX_SECONDS")))


# Emails claimed at a time: a round's sends, each bounded by EMAIL_TIMEOUT (30 s), end well
# within the claim (CLAIM_SECONDS, 600 s), so no claim lapses while its sender still works.
CLAIM_ROUND = 10


def emails_send_due(*, ids: Iterable[int] | None = None, limit: int = 200) -> int:
    """Send up to `limit` recorded emails that are due, CLAIM_ROUND at a time
    (_emails_send_round). Returns the emails sent."""
    wanted = list(ids) if ids is not None else None
    sent = tried = 0
    while tried < limit:
        round_sent, round_tried = _emails_send_round(
            ids=wanted, limit=min(CLAIM_ROUND, limit - tried)
        )
        if not round_tried:
            break
        sent += round_sent
        tried += round_tried
    return sent


def _emails_send_round(*, ids: list[int] | None, limit: int) -> tuple[int, int]:
    """Send the recorded emails that are due (pending and past their next attempt time, or
    claimed by a sender whose claim lapsed), at most `limit`, over one mail connection.

    Each row is claimed first, in its own committed statement: `pending` -> `sending` with a
    claim lease, counting the attempt, under FOR UPDATE SKIP LOCKED. Two workers racing over
    the same rows therefore never both claim one; a row already `sending` under a live claim
    or `sent` is not touched. Only after the send is the row marked `sent`, by a
    compare-and-set on (state, attempts): a late answer from a sender whose claim lapsed
    cannot overwrite a newer attempt. A failed send goes back to `pending` with a backoff, or
    after MAX_ATTEMPTS to `failed` (signal email_given_up, audited by ops). At-least-once: a
    sender that dies after the mail server took the email but before marking it leaves the
    claim to lapse, and the email is sent again with the same Message-ID.
    Returns the emails sent."""
    table = Email._meta.db_table
    now = timezone.now()
    only = ""
    params: list[Any] = [now + timedelta(seconds=_email_setting("CLAIM_SECONDS")), now, now]
    if ids is not None:
        only = "AND id = ANY(%s)"
        params.append(list(ids))
    params.append(limit)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} SET state = 'sending', attempts = attempts + 1, claimed_until = %s
            WHERE id IN (
                SELECT id FROM {table}
                WHERE ((state = 'pending' AND next_attempt_at <= %s)
                       OR (state = 'sending' AND claimed_until < %s)) {only}
                ORDER BY next_attempt_at, id
                LIMIT %s
                FOR UPDATE SKIP LOCKED)
            RETURNING id, attempts, address, subject, body, created_at
            """,
            params,
        )
        claimed = sorted(cursor.fetchall())
    if not claimed:
        return 0, 0
    sent: list[tuple[int, int]] = []
    failed: list[tuple[int, int, str]] = []
    try:
        mail = get_connection()
        mail.open()
    except Exception as error:  # the mail server is unreachable: every claimed email waits
        failed = [(pk, attempts, _error_text(error)) for pk, attempts, *_ in claimed]
    else:
        try:
            for pk, attempts, address, subject, body, created_at in claimed:
                message = EmailMessage(
                    subject=subject,
                    body=body,
                    from_email=settings.DEFAULT_FROM_EMAIL,
                    to=[address],
                    headers={"Message-ID": _message_id(pk, created_at)},
                    connection=mail,
                )
                try:
                    if not mail.send_messages([message]):
                        raise RuntimeError("the mail backend sent nothing")
                except Exception as error:
                    failed.append((pk, attempts, _error_text(error)))
                else:
                    sent.append((pk, attempts))
        finally:
            try:
                mail.close()
            except Exception:  # closing a broken connection; the outcomes are known already
                logger.warning("could not close the mail connection", exc_info=True)
    if sent:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {table} AS e SET state = 'sent', sent_at = %s, claimed_until = NULL,
                    last_error = ''
                FROM unnest(%s::bigint[], %s::integer[]) AS s(id, attempts)
                WHERE e.id = s.id AND e.attempts = s.attempts AND e.state = 'sending'
                """,
                [timezone.now(), [pk for pk, _ in sent], [a for _, a in sent]],
            )
        instruments.notification_emails.labels("sent").inc(len(sent))
    for pk, attempts, error_text in failed:
        _email_attempt_failed(pk=pk, attempts=attempts, error_text=error_text)
    if failed:
        instruments.notification_emails.labels("failed").inc(len(failed))
        logger.warning("could not send %d of %d notification emails", len(failed), len(claimed))
    return len(sent), len(claimed)


def _email_attempt_failed(*, pk: int, attempts: int, error_text: str) -> None:
    with transaction.atomic():
        email = (
            Email.objects.select_for_update()
            .filter(pk=pk, attempts=attempts, state=Email.State.SENDING)
            .first()
        )
        if email is None:  # our claim lapsed and another sender has the row now
            return
        email.last_error = error_text
        email.claimed_until = None
        if attempts >= _email_setting("MAX_ATTEMPTS"):
            email.state = Email.State.FAILED
            email.save(update_fields=["state", "last_error", "claimed_until"])
            email_given_up.send(sender=Email, email=email)
        else:
            email.state = Email.State.PENDING
            email.next_attempt_at = timezone.now() + email_retry_delay(attempts)
            email.save(update_fields=["state", "last_error", "claimed_until", "next_attempt_at"])


def emails_failed_count() -> int:
    return Email.objects.filter(state=Email.State.FAILED).count()


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def _message_id(pk: int, created_at) -> str:
    """The same for every attempt at one email, so a repeat after a crash is recognisable."""
    host = urlsplit(settings.ALLOTMENT_SITE_URL or "").hostname or "allotment.invalid"
    return f"<allotment.email.{pk}.{int(created_at.timestamp())}@{host}>"


def absolute_url(link: str) -> str:
    """A link a mail client can open: the site's address (ALLOTMENT_SITE_URL) joined to the
    app's own path; other links are kept as they are."""
    if not link or not link.startswith("/") or link.startswith("//"):
        return link
    return settings.ALLOTMENT_SITE_URL.rstrip("/") + link


def _composed(notices: list[tuple[str, str]]) -> dict[str, str]:
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
    return {"subject": subject, "body": body}


def notifications_mark_read(*, user, ids: Iterable[int] | None = None) -> int:
    from django.utils import timezone

    qs = Notification.objects.filter(recipient=user, read_at__isnull=True)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs.update(read_at=timezone.now())
