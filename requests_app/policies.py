"""Who may do what to a compute request (PRODUCT.md sections 1-3). Every predicate is used alike
by the services (under the row lock), the pages and the API, so they can never disagree.

Each predicate returns a `Verdict`: it unpacks as `(allowed, reason)` and is truthy only when
allowed. `conflict` tells a refusal because of the request's *state* (answered 409: "it was
decided already") from one because of *who* asks (answered 403).

Visibility (answered 404 when false):
- a draft is the team's own working copy: only members of the project's team see it;
- a project's requests: whoever may see the project (org.visibility, the one confidentiality
  rule);
- anything else: every signed-in user.
"""

from __future__ import annotations

from dataclasses import dataclass

from org.roles import roles_of
from org.visibility import can_see_project

from .workflow import EDITABLE, PENDING_STAGE, WITHDRAWABLE, Stage, Status


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""
    conflict: bool = False  # refused because of the request's state, not the user's role

    def __bool__(self) -> bool:
        return self.allowed

    def __iter__(self):
        return iter((self.allowed, self.reason))


ALLOWED = Verdict(True)


def _deny(reason: str) -> Verdict:
    return Verdict(False, reason)


def _conflict(reason: str) -> Verdict:
    return Verdict(False, reason, conflict=True)


def _status_label(status: str) -> str:
    return Status(status).label.lower()


def _division_id(req) -> int:
    return req.project.team.division_id


def can_view(user, req) -> Verdict:
    roles = roles_of(user)
    if not roles.authenticated:
        return _deny("Sign in to see requests.")
    on_team = roles.member_of(req.project.team_id)
    if req.status == Status.DRAFT and not on_team:
        return _deny("Drafts are visible only to the project's team.")
    if not can_see_project(user, req.project):
        return _deny("This project is confidential.")
    return ALLOWED


def _is_requester(user, req) -> bool:
    return req.requester_id == user.pk and roles_of(user).member_of(req.project.team_id)


def can_edit(user, req) -> Verdict:
    if not _is_requester(user, req):
        return _deny("Only the researcher who filed this request may edit it.")
    if req.status not in EDITABLE:
        return _conflict(
            f"This request is {_status_label(req.status)}; only a draft or a request sent back "
            "for changes can be edited."
        )
    return ALLOWED


def can_submit(user, req) -> Verdict:
    if not _is_requester(user, req):
        return _deny("Only the researcher who filed this request may submit it.")
    if req.status not in EDITABLE:
        return _conflict(
            f"This request is {_status_label(req.status)}; only a draft or a request sent back "
            "for changes can be submitted."
        )
    return ALLOWED


def can_withdraw(user, req) -> Verdict:
    if not _is_requester(user, req):
        return _deny("Only the researcher who filed this request may withdraw it.")
    if req.status not in WITHDRAWABLE:
        return _conflict(
            f"This request is {_status_label(req.status)}; it can no longer be withdrawn."
        )
    return ALLOWED


def current_stage(req) -> str | None:
    return PENDING_STAGE.get(req.status)


def _decided_earlier_stage(user, req, steps) -> bool:
    """Did `user` decide another stage of this request in the current round? `steps` are the
    request's steps (any rounds); pass them when prefetched, else they are read."""
    if steps is None:
        steps = req.steps.all()
    return any(
        s.round == req.round and s.decider_id == user.pk and s.stage != Stage.EXECUTIVE
        for s in steps
    )


def can_decide(user, req, *, steps=None) -> Verdict:
    """May `user` approve, reject or request changes on the stage `req` waits for now?"""
    roles = roles_of(user)
    leads_it = roles.leads(_division_id(req))
    if not (leads_it or roles.is_executive):
        return _deny("Only the leads of the request's division and executives decide requests.")
    stage = current_stage(req)
    if stage is None:
        return _conflict(
            f"This request is {_status_label(req.status)}; it is not waiting for a decision."
        )
    if stage == Stage.DIVISION and not leads_it:
        return _deny("Only leads of the project's division decide the division review.")
    if stage == Stage.EXECUTIVE and not roles.is_executive:
        return _deny("Only executives decide the executive review.")
    if req.requester_id == user.pk:
        return _deny("You filed this request; someone else must decide it.")
    if stage == Stage.EXECUTIVE and _decided_earlier_stage(user, req, steps):
        return _deny(
            "You decided the division review of this request; another person must decide its "
            "executive review."
        )
    return ALLOWED


def available_actions(user, req, *, steps=None) -> dict[str, bool]:
    """What the viewer may do now: the page shows exactly these buttons."""
    return {
        "edit": bool(can_edit(user, req)),
        "submit": bool(can_submit(user, req)),
        "withdraw": bool(can_withdraw(user, req)),
        "decide": bool(can_decide(user, req, steps=steps)),
    }
