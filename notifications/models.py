from django.conf import settings
from django.db import models


class Notification(models.Model):
    class Kind(models.TextChoices):
        SUBMITTED = "submitted", "Request submitted to you"
        DECIDED = "decided", "Request decided"
        ALLOCATED = "allocated", "Request allocated"
        WAITING = "waiting", "Request waiting"
        RECLAIM = "reclaim", "Reclaim notice"
        ENDING_SOON = "ending_soon", "Allocation ending soon"
        FAILED = "failed", "Apply failed"
        INFO = "info", "Information"

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    message = models.CharField(max_length=500)
    link = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    # Makes a notification idempotent: a task that runs twice tells a person once.
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)
    # The outbox: an email is due for this notice and not yet sent (services.notify sets it;
    # notifications_email_due claims and clears it, after the commit or in the periodic sweep).
    email_due = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["recipient", "read_at", "-created_at"]),
            # One person's list, newest first, paged by cursor (common/pagination.py).
            models.Index(fields=["recipient", "-created_at", "-id"], name="notification_recent"),
            models.Index(
                fields=["created_at"], condition=models.Q(email_due=True), name="notification_due"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "dedupe_key"], name="notification_dedupe_unique"
            )
        ]

    def __str__(self):
        return f"{self.recipient}: {self.message[:60]}"


class Email(models.Model):
    """The email outbox: one composed email, recorded in the transaction that claims its notices
    and sent after the commit (notifications.services.emails_send_due). A send is claimed by a
    compare-and-set of `state` to `sending` with a lease (`claimed_until`), so two workers never
    send the same row; a failed send goes back to `pending` with `next_attempt_at` pushed out
    (backoff) until `attempts` reaches the limit, then stays `failed` for compute ops to see."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="emails"
    )
    address = models.CharField(max_length=254)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField()
    # While `sending`: the claim lapses at this time (a worker that died mid-send); then another
    # worker may claim the row again. The one window where an email can go out twice.
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state__in=["pending", "sending"]),
                name="email_unsent",
            ),
            models.Index(
                fields=["-created_at"], condition=models.Q(state="failed"), name="email_failed"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(state__in=["pending", "sending", "sent", "failed"]),
                name="email_state_valid",
            ),
            models.CheckConstraint(
                condition=~models.Q(state="sending") | models.Q(claimed_until__isnull=False),
                name="email_sending_has_claim",
            ),
        ]

    def __str__(self):
        return f"email #{self.pk} to {self.address}: {self.subject[:60]} ({self.state})"
