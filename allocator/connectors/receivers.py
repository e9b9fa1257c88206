"""The engine writes the ledger; this writes, in the same transaction, what the scheduler must
hold because of it (the outbox). post_save fires inside the engine's transaction, so the
intent exists exactly when the ledger row does."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from allocator.models import LedgerEntry


@receiver(post_save, sender=LedgerEntry, dispatch_uid="connectors-ledger-intents")
def ledger_entry_intents(sender, instance, created, raw=False, **kwargs):
    if not created or raw:
        return
    from .intents import intents_record_for_ledger

    intents_record_for_ledger(instance)
