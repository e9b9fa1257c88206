"""`manage.py ledger_verify`: every allocation rebuilds from the ledger, and the audit trail's
hash chain is intact (PRODUCT.md sections 2 and 9). Read-only; run it against production, a
replica or a restored backup (docs/deploy.md)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction

# What an allocation's state is after an entry of each kind. A reclaim or a transfer leaves it
# active when it kept some GPUs, reclaimed when it gave all back (its Reclaim row says which).
STATE_AFTER = {"grant": "active", "extend": "active", "release": "released", "expire": "ended"}


@dataclass
class Report:
    allocations: int = 0
    entries: int = 0
    audit_rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def audit_chain_link(*, since: datetime | None = None) -> int:
    """Link the committed audit rows not linked yet (all of them, or those since `since`);
    returns how many. Safe to run from many processes at once: they take turns."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT allotment_audit_link_pending(%s)", [since or "-infinity"])
        return cursor.fetchone()[0]


def verify(*, link: bool = True) -> Report:
    """`link`: first link what committed since the last run (a read-only replica: False, and
    rows committed since the primary's last run show as unlinked)."""
    if link:
        audit_chain_link()
    report = Report()
    # One snapshot for every table read, while workers may still be writing.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _verify_allocations(report)
        _verify_audit_chain(report)
    return report


def _verify_allocations(report: Report) -> None:
    from allocator.models import Allocation, AllocationChange, LedgerEntry, Reclaim

    reclaims: dict[int, list[int]] = defaultdict(list)
    for allocation_id, new_gpus in (
        Reclaim.objects.filter(status=Reclaim.Status.APPLIED)
        .order_by("applied_at", "id")
        .values_list("allocation_id", "new_gpus")
    ):
        reclaims[allocation_id].append(new_gpus)

    rebuilt: dict[int, tuple] = {}
    grants: dict[int, int] = defaultdict(int)
    seen_reclaims: dict[int, int] = defaultdict(int)
    for allocation_id, kind, change_id, gpus, start, end in (
        LedgerEntry.objects.order_by("allocation_id", "at", "id")
        .values_list("allocation_id", "kind", "change_id", "gpus", "start", "end")
        .iterator(chunk_size=5000)
    ):
        report.entries += 1
        if allocation_id not in rebuilt and kind != "grant":
            report.problems.append(f"allocation {allocation_id}: first ledger entry is {kind}")
        if kind in ("grant", "extend") and change_id is not None:
            grants[change_id] += 1
        if kind in STATE_AFTER:
            state = STATE_AFTER[kind]
        else:  # reclaim, transfer
            k = seen_reclaims[allocation_id]
            seen_reclaims[allocation_id] += 1
            decided = reclaims[allocation_id]
            if k >= len(decided):
                report.problems.append(
                    f"allocation {allocation_id}: a {kind} entry with no applied reclaim"
                )
                state = "?"
            else:
                state = "reclaimed" if decided[k] == 0 else "active"
        rebuilt[allocation_id] = (gpus, start, end, state)

    for pk, gpus, start, end, state in Allocation.objects.values_list(
        "pk", "gpus", "start", "end", "state"
    ).iterator(chunk_size=5000):
        report.allocations += 1
        from_ledger = rebuilt.pop(pk, None)
        if from_ledger is None:
            report.problems.append(f"allocation {pk}: no ledger entry")
        elif from_ledger != (gpus, start, end, state):
            report.problems.append(
                f"allocation {pk} is {gpus} GPUs {start:%Y-%m-%d %H:%M}-{end:%Y-%m-%d %H:%M} "
                f"{state}; its ledger rebuilds {from_ledger[0]} GPUs "
                f"{from_ledger[1]:%Y-%m-%d %H:%M}-{from_ledger[2]:%Y-%m-%d %H:%M} {from_ledger[3]}"
            )

    for change_id in AllocationChange.objects.filter(
        status=AllocationChange.Status.APPLIED
    ).values_list("pk", flat=True):
        if grants.pop(change_id, 0) != 1:
            report.problems.append(f"applied change {change_id}: not exactly one grant entry")
    for change_id in grants:
        report.problems.append(f"change {change_id} has a grant entry but is not applied")


def _verify_audit_chain(report: Report) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.id FROM audit_auditevent e "
            "LEFT JOIN audit_auditchainlink l ON l.event_id = e.id WHERE l.event_id IS NULL "
            "ORDER BY e.id LIMIT 20"
        )
        unlinked = [row[0] for row in cursor.fetchall()]
        if unlinked:
            report.problems.append(
                f"audit rows outside the hash chain: {', '.join(map(str, unlinked))}"
            )
        cursor.execute(
            "SELECT l.position, l.event_id, l.prev_hash, l.hash, "
            "allotment_audit_digest(e, l.prev_hash) "
            "FROM audit_auditchainlink l JOIN audit_auditevent e ON e.id = l.event_id "
            "ORDER BY l.position"
        )
        previous = ""
        while rows := cursor.fetchmany(5000):
            for position, event_id, prev_hash, stored, recomputed in rows:
                report.audit_rows += 1
                if prev_hash != previous:
                    report.problems.append(
                        f"audit chain broken at link {position} (audit row {event_id}): "
                        "it does not follow the link before it"
                    )
                if recomputed != stored:
                    report.problems.append(
                        f"audit row {event_id} was changed after it was written "
                        f"(link {position}'s hash no longer matches)"
                    )
                previous = stored
