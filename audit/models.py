"""The append-only audit trail (PRODUCT.md section 2). Rows are only ever inserted; a database
trigger (migration 0002) refuses UPDATE, DELETE and TRUNCATE whatever the client."""

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("The audit trail is append-only.")

    def delete(self):
        raise PermissionError("The audit trail is append-only.")


class AuditEvent(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty when the system (a worker or a periodic task) acted.",
    )
    action = models.CharField(max_length=60)
    object_type = models.CharField(max_length=60)
    object_id = models.BigIntegerField()
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    message = models.TextField(blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id", "at"]),
            # The API list's cursor order, newest first (common/pagination.py).
            models.Index(fields=["-at", "-id"], name="audit_recent"),
        ]

    def __str__(self):
        who = self.actor or "system"
        return f"{self.at:%Y-%m-%d %H:%M} {who} {self.action} {self.object_type}#{self.object_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("The audit trail is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit trail is append-only.")


class AuditChainLink(models.Model):
    """The audit trail's hash chain (tamper evidence; `manage.py ledger_verify` checks it).

    One link per audit row: `hash` = sha256(`prev_hash` | the row's content), `prev_hash` the
    previous link's hash. Editing, deleting or inserting an audit row out of band breaks the
    chain from there on. Links are made after the fact by the database function
    allotment_audit_link_pending() (migration 0004), run every few seconds by beat
    (ops.tasks.audit_chain_link) and by ledger_verify: the chain is in the order rows were
    linked, and writers never wait for it (a lock taken at commit deadlocked with the foreign
    key checks PostgreSQL also runs at commit)."""

    position = models.BigAutoField(primary_key=True)
    event = models.OneToOneField(
        AuditEvent, on_delete=models.PROTECT, related_name="chain_link", db_constraint=True
    )
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["position"]

    def __str__(self):
        return f"link {self.position}: audit #{self.event_id} {self.hash[:12]}"
