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
