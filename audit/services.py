from django.db import models

from .models import AuditEvent


def audit_record(
    *,
    actor,
    action: str,
    obj: models.Model,
    before: dict | None = None,
    after: dict | None = None,
    message: str = "",
) -> AuditEvent:
    """Write one audit row. Call it inside the transaction that makes the change, so the row
    exists exactly when the change does."""
    event = audit_event(
        actor=actor, action=action, obj=obj, before=before, after=after, message=message
    )
    event.save()
    return event


def audit_event(
    *,
    actor,
    action: str,
    obj: models.Model,
    before: dict | None = None,
    after: dict | None = None,
    message: str = "",
) -> AuditEvent:
    """The audit row audit_record writes, not saved yet (for audit_record_many)."""
    return AuditEvent(
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=obj.pk,
        object_repr=str(obj)[:200],
        before=before or {},
        after=after or {},
        message=message,
    )


def audit_record_many(events: list[AuditEvent]) -> list[AuditEvent]:
    """Write several audit rows in one INSERT, in the caller's transaction (the apply engine's
    batch: one row per change it settled)."""
    return AuditEvent.objects.bulk_create(events)
