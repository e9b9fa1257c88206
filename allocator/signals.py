"""How the apply engine tells the rest of the app what became of an approved change.

`change_settled` is sent *inside* the engine's transaction, with the change row locked, each
time a change's status moves. Receivers (requests_app/receivers.py) update their own rows in
that same transaction, so a request's status and its change's status can never disagree.

kwargs:
    change   AllocationChange, already saved with its new status
    outcome  an allocator.outcomes.Outcome: applied, waiting, needs_review, failed or retried
    reasons  list[str] — for needs_review: the executive-review reasons in words;
             for waiting: why it waits; for failed: the error; else []
    actor    the user who caused it, or None when the engine or a periodic task acted
"""

from django.dispatch import Signal

change_settled = Signal()
