"""Mail backends for the outbox tests: the true edge of the system (the mail server)."""

import threading
import time
from smtplib import SMTPRecipientsRefused, SMTPServerDisconnected

from django.core.mail.backends.base import BaseEmailBackend

# What SlowBackend delivered, across threads (each thread opens its own backend instance).
delivered: list = []
_lock = threading.Lock()


class RefusingBackend(BaseEmailBackend):
    """The mail server answers but refuses every message."""

    def send_messages(self, email_messages):
        raise SMTPRecipientsRefused(
            {m.to[0]: (550, b"mailbox unavailable") for m in email_messages}
        )


class UnreachableBackend(BaseEmailBackend):
    """The mail server cannot be reached at all."""

    def open(self):
        raise SMTPServerDisconnected("Connection unexpectedly closed")

    def send_messages(self, email_messages):  # pragma: no cover - open() already raised
        raise AssertionError("sent without a connection")


class SlowBackend(BaseEmailBackend):
    """Takes a while to hand each message over (a slow SMTP server), so that two senders
    overlap; records every message it was given."""

    def send_messages(self, email_messages):
        time.sleep(0.3)
        with _lock:
            delivered.extend(email_messages)
        return len(email_messages)
