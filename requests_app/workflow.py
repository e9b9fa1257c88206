"""A request's states and every allowed move between them (PRODUCT.md section 3). Pure: no I/O.
Only services change a request's status, and only along these edges."""

from django.db import models


class Status(models.TextChoices):
    DRAFT = "draft", "Draft"
    PENDING_DIVISION = "pending_division", "Pending division review"
    PENDING_EXECUTIVE = "pending_executive", "Pending executive review"
    APPROVED = "approved", "Approved"
    ALLOCATED = "allocated", "Allocated"
    WAITING = "waiting", "Waiting for capacity"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    FAILED = "failed", "Failed to apply"


class Stage(models.TextChoices):
    DIVISION = "division", "Division review"
    EXECUTIVE = "executive", "Executive review"


class Action(models.TextChoices):
    SUBMIT = "submit", "Submit"
    WITHDRAW = "withdraw", "Withdraw"
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"
    REQUEST_CHANGES = "request_changes", "Request changes"
    EDIT = "edit", "Edit"


TRANSITIONS: dict[str, set[str]] = {
    Status.DRAFT: {Status.PENDING_DIVISION, Status.WITHDRAWN},
    Status.PENDING_DIVISION: {
        Status.PENDING_EXECUTIVE,
        Status.APPROVED,
        Status.REJECTED,
        Status.CHANGES_REQUESTED,
        Status.WITHDRAWN,
    },
    Status.PENDING_EXECUTIVE: {
        Status.APPROVED,
        Status.REJECTED,
        Status.CHANGES_REQUESTED,
        Status.WITHDRAWN,
    },
    # Set by the apply engine: allocated, waiting, failed, or back to executive review when the
    # share rule now holds.
    Status.APPROVED: {Status.ALLOCATED, Status.WAITING, Status.FAILED, Status.PENDING_EXECUTIVE},
    Status.WAITING: {Status.ALLOCATED, Status.FAILED, Status.PENDING_EXECUTIVE},
    Status.FAILED: {Status.APPROVED},  # compute ops retry
    Status.CHANGES_REQUESTED: {Status.PENDING_DIVISION, Status.WITHDRAWN},
    Status.ALLOCATED: set(),
    Status.REJECTED: set(),
    Status.WITHDRAWN: set(),
}

EDITABLE = frozenset({Status.DRAFT, Status.CHANGES_REQUESTED})
PENDING_STAGE = {Status.PENDING_DIVISION: Stage.DIVISION, Status.PENDING_EXECUTIVE: Stage.EXECUTIVE}
WITHDRAWABLE = frozenset(
    {Status.DRAFT, Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE, Status.CHANGES_REQUESTED}
)


def can_move(source: str, target: str) -> bool:
    return target in TRANSITIONS.get(source, set())
