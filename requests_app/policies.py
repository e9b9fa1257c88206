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

from accounts.delegations import Acting, acting_for
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


def _deciders_of_earlier_stage(req, steps) -> set[int]:
    """Everyone who decided another stage of this request in the current round: the decider and,
    for a delegate's decision, the person they acted for. `steps` are the request's steps (any
    rounds); pass them when prefetched, else they are read."""
    if steps is None:
        steps = req.steps.all()
    people: set[int] = set()
    for s in steps:
        if s.round == req.round and s.stage != Stage.EXECUTIVE:
            people.add(s.decider_id)
            if s.on_behalf_of_id:
                people.add(s.on_behalf_of_id)
    return people


@dataclass(frozen=True)
class Capacity:
    """Whether `user` may decide the current stage, and for whom: `acting` is None when they
    decide in their own right, else the delegation (accounts.delegations.Acting) they use."""

    verdict: Verdict
    acting: Acting | None = None

    @property
    def on_behalf_of_id(self) -> int | None:
        return self.acting.delegator_id if self.acting else None


def decide_capacity(user, req, *, steps=None) -> Capacity:
    """May `user` approve, reject or request changes on the stage `req` waits for now, and in
    whose name? Separation of duties holds for a delegate and the person they act for alike:
    neither may decide a request either of them filed, nor both stages of one request."""
    roles = roles_of(user)
    division_id = _division_id(req)
    leads_it = roles.leads(division_id)
    acting = acting_for(user)
    division_delegations = [a for a in acting if a.covers_division_review(division_id)]
    executive_delegations = [a for a in acting if a.covers_executive_review]
    if not (leads_it or roles.is_executive or division_delegations or executive_delegations):
        return Capacity(
            _deny("Only the leads of the request's division and executives decide requests.")
        )
    stage = current_stage(req)
    if stage is None:
        return Capacity(
            _conflict(
                f"This request is {_status_label(req.status)}; it is not waiting for a decision."
            )
        )
    if stage == Stage.DIVISION:
        options = ([None] if leads_it else []) + division_delegations
        if not options:
            return Capacity(
                _deny("Only leads of the project's division decide the division review.")
            )
    else:
        options = ([None] if roles.is_executive else []) + executive_delegations
        if not options:
            return Capacity(_deny("Only executives decide the executive review."))
    if req.requester_id == user.pk:
        return Capacity(_deny("You filed this request; someone else must decide it."))
    earlier = _deciders_of_earlier_stage(req, steps) if stage == Stage.EXECUTIVE else set()
    # The first refusal's reason is the one shown (a Verdict is falsy when it refuses).
    refusals: list[Verdict] = []
    for option in options:
        if option is not None and option.delegator_id == req.requester_id:
            refusals.append(
                _deny(
                    f"{option.delegator_name} filed this request; you may not decide it on "
                    "their behalf."
                )
            )
        elif user.pk in earlier:
            refusals.append(
                _deny(
                    "You decided the division review of this request; another person must "
                    "decide its executive review."
                )
            )
        elif option is not None and option.delegator_id in earlier:
            refusals.append(
                _deny(
                    f"{option.delegator_name} decided the division review of this request; you "
                    "may not decide its executive review on their behalf."
                )
            )
        else:
            return Capacity(ALLOWED, option)
    return Capacity(refusals[0])


def acting_for_in_list(user, req) -> str | None:
    """For a list of requests already filtered by the inbox selector: the name of the person
    `user` decides this one for, or None when they decide it in their own right. (Without the
    steps: decide_capacity, under the row lock, has the last word.)"""
    roles = roles_of(user)
    stage = current_stage(req)
    division_id = _division_id(req)
    if (stage == Stage.DIVISION and roles.leads(division_id)) or (
        stage == Stage.EXECUTIVE and roles.is_executive
    ):
        return None
    for acting in acting_for(user):
        if acting.delegator_id == req.requester_id:
            continue
        if (stage == Stage.DIVISION and acting.covers_division_review(division_id)) or (
            stage == Stage.EXECUTIVE and acting.covers_executive_review
        ):
            return acting.delegator_name
    return None


def can_decide(user, req, *, steps=None) -> Verdict:
    """May `user` approve, reject or request changes on the stage `req` waits for now?"""
    return decide_capacity(user, req, steps=steps).verdict


def available_actions(user, req, *, steps=None) -> dict[str, bool]:
    """What the viewer may do now: the page shows exactly these buttons."""
    return {
        "edit": bool(can_edit(user, req)),
        "submit": bool(can_submit(user, req)),
        "withdraw": bool(can_withdraw(user, req)),
        "decide": bool(can_decide(user, req, steps=steps)),
    }
