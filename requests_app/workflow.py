"""A request's whole state machine (PRODUCT.md section 3): its states, every allowed move
between them, where a reviewer's decision moves it, and where each outcome of the apply engine
moves it. Pure: no I/O. Only services (and the engine's hand-back, receivers.py) change a
request's status, and only along these edges."""

from django.db import models

from allocator.outcomes import Outcome


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


class Decision(models.TextChoices):
    """A reviewer's decision on one stage (ApprovalStep.decision)."""

    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"


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


# --- Deciding a review stage -----------------------------------------------------------------

DECISIONS: dict[str, Decision] = {
    Action.APPROVE: Decision.APPROVED,
    Action.REJECT: Decision.REJECTED,
    Action.REQUEST_CHANGES: Decision.CHANGES_REQUESTED,
}

DECISION_STATUS: dict[str, Status] = {
    Decision.APPROVED: Status.APPROVED,
    Decision.REJECTED: Status.REJECTED,
    Decision.CHANGES_REQUESTED: Status.CHANGES_REQUESTED,
}


def decision_target(decision: str, *, stage: str, needs_executive: bool) -> Status:
    """The status a decision on `stage` moves the request to. A division approval of a request
    that needs executive review (its routing reasons) goes on to the executive stage instead."""
    if decision == Decision.APPROVED and stage == Stage.DIVISION and needs_executive:
        return Status.PENDING_EXECUTIVE
    return DECISION_STATUS[decision]


# --- The apply engine's hand-back (receivers.py) ---------------------------------------------

OUTCOME_STATUS: dict[str, Status] = {
    Outcome.APPLIED: Status.ALLOCATED,
    Outcome.WAITING: Status.WAITING,
    Outcome.NEEDS_REVIEW: Status.PENDING_EXECUTIVE,
    Outcome.FAILED: Status.FAILED,
    Outcome.RETRIED: Status.APPROVED,
}
