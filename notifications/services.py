"""Tell people things, in the app and by email (Django's email framework). Emails go out after
the transaction commits, so a rolled-back change never mails anyone."""

import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

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
    created = []
    for user in {u.pk: u for u in recipients if u is not None}.values():
        if dedupe_key is not None:
            note, was_created = Notification.objects.get_or_create(
                recipient=user,
                dedupe_key=dedupe_key,
                defaults={"kind": kind, "message": message[:500], "link": link},
            )
            if not was_created:
                continue
        else:
            note = Notification.objects.create(
                recipient=user, kind=kind, message=message[:500], link=link
            )
        created.append(note)
        if email and user.email:
            transaction.on_commit(lambda u=user, m=message, lk=link: _send_email(u.email, m, lk))
    return created


def _send_email(address: str, message: str, link: str) -> None:
    body = message + (f"\n\n{link}" if link else "")
    try:
        send_mail(
            subject=f"[Allotment] {message[:70]}",
            message=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[address],
        )
    except Exception:  # an unreachable mail server must not undo a committed decision
        logger.exception("could not send notification email to %s", address)


def notifications_mark_read(*, user, ids: Iterable[int] | None = None) -> int:
    from django.utils import timezone

    qs = Notification.objects.filter(recipient=user, read_at__isnull=True)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs.update(read_at=timezone.now())
