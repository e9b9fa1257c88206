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
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=obj.pk,
        object_repr=str(obj)[:200],
        before=before or {},
        after=after or {},
        message=message,
    )
