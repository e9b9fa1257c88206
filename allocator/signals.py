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

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from django.dispatch import Signal

change_settled = Signal()

# Asked, not told: which request made each change, for the links on allocator's pages and the
# API's `request` field. allocator does not know requests_app (it imports downward only);
# requests_app answers (requests_app/selectors.request_ids_for_changes, connected in its
# AppConfig). kwargs: change_ids (list[int]); each receiver returns {change id: request id}.
change_origin_requested = Signal()


def request_ids_for_changes(change_ids: Iterable[int]) -> dict[int, int]:
    """{change id: id of the request that made it}; changes made otherwise are left out. One
    query for any number of changes (with requests_app installed)."""
    ids = list(change_ids)
    found: dict[int, int] = {}
    if not ids:
        return found
    for _receiver, answer in change_origin_requested.send(sender=None, change_ids=ids):
        found.update(cast("dict[int, int]", answer) or {})
    return found


# The other way round: which change each request made, so compute ops name a destination by its
# request number (the change id stays internal). kwargs: request_ids (list[int]); each receiver
# returns {request id: change id}.
change_of_request_requested = Signal()


def change_ids_for_requests(request_ids) -> dict[int, int]:
    """{request id: id of the change it made}; requests without a change are left out."""
    ids = list(request_ids)
    found: dict[int, int] = {}
    if not ids:
        return found
    for _receiver, answer in change_of_request_requested.send(sender=None, request_ids=ids):
        found.update(cast("dict[int, int]", answer) or {})
    return found


# Asked, not told: which allocations the enforcing system measured as idle (or far under their
# GPUs), for the reclaim suggestions. allocator does not know its connectors (they import the
# domain, never the reverse); allocator.connectors answers from its usage read-back
# (connectors/usage.idle_usage_for, connected in its AppConfig). kwargs: allocation_ids
# (list[int]), now (datetime); each receiver returns {allocation id: MeasuredUse}.
allocation_usage_requested = Signal()


@dataclass(frozen=True)
class MeasuredUse:
    """What an allocation's project ran over the last `hours` hours: `share` of its GPU-hours."""

    share: float
    hours: int


def measured_idle(allocation_ids: Iterable[int], *, now: datetime) -> dict[int, MeasuredUse]:
    """{allocation id: its measured use}, for those measured idle; empty when no connector is
    installed or none measured them. Bounded queries for any number of allocations."""
    ids = list(allocation_ids)
    found: dict[int, MeasuredUse] = {}
    if not ids:
        return found
    for _receiver, answer in allocation_usage_requested.send(
        sender=None, allocation_ids=ids, now=now
    ):
        found.update(cast("dict[int, MeasuredUse]", answer) or {})
    return found
