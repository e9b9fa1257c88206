"""Signals the notifications app sends; apps above it (ops) record them (notifications may not
import the audit app: they are siblings)."""

from django.dispatch import Signal

# Sent inside the transaction that marks an email `failed` for good: email (the Email row).
email_given_up = Signal()
