from django.db import models


class FaultInjection(models.Model):
    """An armed fault at a named point of the apply path (allocator/faults.py). Read only when
    settings.ALLOTMENT_FAULT_INJECTION is true (test settings); a system check refuses that
    setting in production (allocator/checks.py)."""

    point = models.CharField(max_length=60)
    action = models.CharField(max_length=60, help_text="sigkill_self, sleep:N or raise")
    remaining = models.PositiveIntegerField(default=1)
    change_id = models.BigIntegerField(
        null=True, blank=True, help_text="Only for this change (any change when empty)."
    )
    fired = models.PositiveIntegerField(default=0)
    last_pid = models.IntegerField(null=True, blank=True)
    last_backend_pid = models.IntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["point", "remaining"])]

    def __str__(self):
        return f"{self.point}: {self.action} x{self.remaining}"
