"""Writes of the GPU pool (PRODUCT.md section 4), by responsibility:

    changes.py   create the change an approval makes, dispatch it; resume, cancel, retry
    engine.py    claim and apply a change; serve a pool's queue; settle each outcome
    release.py   the team gives GPUs back early: all, some, or sooner
    reclaims.py  reclaim, transfer; reclaims that came due; cancel or change a scheduled one
    moves.py     move GPUs by picking from several allocations; wind a project down
    capacity.py  arrivals, decommissions, repairs
    periodic.py  expiry, serve-all, the resend sweep, reminders
    records.py   the ledger row, audit snapshot, recipients and time words they share

Every write that changes what a pool holds or can hold runs under that pool's row lock
(allocator/locks.py gives the order), recomputes the pool's timeline from the database after
taking the lock, and writes its ledger and audit rows in the same transaction. The invariant —
held(t) <= capacity(t) at every instant — therefore holds under any interleaving of web
processes and workers on any number of machines. Services take parsed, typed arguments (the
forms and serializers parse) and decide what is allowed.
"""

from .capacity import capacity_change_create
from .changes import (
    allocation_change_cancel,
    allocation_change_create,
    allocation_change_resume,
    allocation_change_retry,
)
from .engine import ChangeBusy, allocation_change_apply, allocation_change_record_error
from .moves import gpus_move, project_wind_down
from .periodic import (
    allocations_expire,
    allocations_remind_ending,
    changes_resend_stuck,
    queues_serve_all,
)
from .reclaims import (
    allocation_reclaim,
    allocation_transfer,
    reclaim_cancel,
    reclaim_change,
    reclaim_effect_words,
    reclaims_apply_due,
)
from .release import allocation_release, allocation_words

__all__ = [
    "ChangeBusy",
    "allocation_change_apply",
    "allocation_change_cancel",
    "allocation_change_create",
    "allocation_change_record_error",
    "allocation_change_resume",
    "allocation_change_retry",
    "allocation_reclaim",
    "allocation_release",
    "allocation_transfer",
    "allocation_words",
    "allocations_expire",
    "allocations_remind_ending",
    "capacity_change_create",
    "changes_resend_stuck",
    "gpus_move",
    "project_wind_down",
    "queues_serve_all",
    "reclaim_cancel",
    "reclaim_change",
    "reclaim_effect_words",
    "reclaims_apply_due",
]
