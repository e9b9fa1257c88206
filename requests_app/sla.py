"""Approval SLAs: when each stage of a request is due (settings ALLOTMENT["APPROVAL_SLA"], per
stage and priority), and the sweep that reminds, then escalates, what is overdue.

A duration is "<n>h" (clock hours) or "<n>d" (working days, Monday to Friday: a request that
arrives on Friday afternoon with "3d" is due on Wednesday afternoon). Pure arithmetic first, then
the one write, `approvals_sla_sweep(now=...)`, which a periodic task calls every few minutes and a
test calls with a controlled clock. Each step (reminder, escalation to the division's leads, then
to the executives) happens once per request, round and stage: a unique row (StageEscalation)
says so, and only the worker that inserts it notifies and audits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import Delegation
from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify
from org.models import RoleGrant

from .models import ComputeRequest, StageEscalation
from .workflow import PENDING_STAGE, Stage, Status

DEFAULT_SLA = {
    Stage.DIVISION: {"urgent": "4h", "high": "1d", "normal": "3d", "low": "5d"},
    Stage.EXECUTIVE: {"urgent": "4h", "high": "1d", "normal": "3d", "low": "5d"},
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hd])\s*$")


def parse_duration(text: str) -> tuple[float, str]:
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r}: expected e.g. '4h' (hours) or '3d' (working days)")
    return float(match.group(1)), match.group(2)


def add_working_days(start: datetime, days: float) -> datetime:
    """`start` plus `days` working days (Saturdays and Sundays do not count), in local time."""
    local = timezone.localtime(start)
    # A start on a weekend counts from the next Monday at the same time of day.
    while local.weekday() >= 5:
        local += timedelta(days=1)
    whole, part = int(days), days - int(days)
    while whole > 0:
        local += timedelta(days=1)
        if local.weekday() < 5:
            whole -= 1
    local += timedelta(days=part)
    while local.weekday() >= 5:
        local += timedelta(days=1)
    return local


def _sla_settings() -> dict:
    configured = settings.ALLOTMENT.get("APPROVAL_SLA") or {}
    return {stage: {**sla, **configured.get(stage, {})} for stage, sla in DEFAULT_SLA.items()}


def sla_of(stage: str, priority: str) -> str:
    return _sla_settings()[stage][priority]


def due_at(stage: str, priority: str, entered: datetime) -> datetime:
    amount, unit = parse_duration(sla_of(stage, priority))
    if unit == "h":
        return entered + timedelta(hours=amount)
    return add_working_days(entered, amount)


@dataclass(frozen=True)
class Due:
    at: datetime
    sla: str  # as configured, e.g. "3d"
    overdue: bool
    left: timedelta  # negative when overdue

    @property
    def words(self) -> str:
        hours = abs(self.left.total_seconds()) / 3600
        span = f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"
        return f"overdue by {span}" if self.overdue else f"due in {span}"


def due_for(req: ComputeRequest, *, now: datetime | None = None) -> Due | None:
    """When the stage `req` waits for is due; None when it waits for no decision."""
    stage = PENDING_STAGE.get(Status(req.status))
    entered = req.stage_entered_at or req.submitted_at
    if stage is None or entered is None:
        return None
    now = now or timezone.now()
    at = due_at(stage, req.priority, entered)
    return Due(at=at, sla=sla_of(stage, req.priority), overdue=now >= at, left=at - now)


def _reminder_before(stage: str, priority: str, entered: datetime, due: datetime) -> datetime:
    """Reminders go out when a quarter of the time is left (at least an hour before)."""
    lead = max((due - entered) / 4, timedelta(hours=1))
    return due - lead


def _escalate_to_executives_after(due: datetime, entered: datetime) -> datetime:
    """A division review still overdue after another full SLA period goes to the executives."""
    return due + (due - entered)


# --- the sweep ----------------------------------------------------------------------------------


def _deciders(req: ComputeRequest, stage: str, now: datetime):
    """Who may decide this stage now in their own right, and their active delegates: the people
    a reminder or an escalation names."""
    User = get_user_model()
    if stage == Stage.DIVISION:
        division_id = req.project.team.division_id
        own = User.objects.filter(
            role_grants__role=RoleGrant.Role.DIVISION_LEAD, role_grants__division_id=division_id
        )
        delegates = Delegation.objects.active(now).filter(
            role=Delegation.Role.DIVISION_LEAD, division_id=division_id
        )
    else:
        own = User.objects.filter(role_grants__role=RoleGrant.Role.EXECUTIVE)
        delegates = Delegation.objects.active(now).filter(role=Delegation.Role.EXECUTIVE)
    ids = set(own.values_list("pk", flat=True)) | set(delegates.values_list("delegate", flat=True))
    ids.discard(req.requester_id)
    return list(User.objects.filter(pk__in=ids, is_active=True).order_by("username"))


def _executives(req: ComputeRequest):
    return list(
        get_user_model()
        .objects.filter(role_grants__role=RoleGrant.Role.EXECUTIVE, is_active=True)
        .exclude(pk=req.requester_id)
        .distinct()
        .order_by("username")
    )


def _step(req: ComputeRequest, stage: str, level: str, *, now, recipients, message: str) -> bool:
    """Record `level` for this request, round and stage once; the one who records it notifies
    and audits. Returns whether this call did it."""
    try:
        with transaction.atomic():
            StageEscalation.objects.create(
                request=req, round=req.round, stage=stage, level=level, at=now
            )
    except IntegrityError:
        return False  # done already, by an earlier sweep or another worker
    with transaction.atomic():
        audit_record(
            actor=None,
            action=f"request.sla_{level}",
            obj=req,
            after={
                "stage": stage,
                "round": req.round,
                "level": level,
                "notified": [u.username for u in recipients],
            },
            message=message,
        )
        notify(
            recipients=recipients,
            kind=Notification.Kind.SUBMITTED,
            message=message,
            link=reverse("requests:detail", args=[req.pk]),
            dedupe_key=f"request-{req.pk}-round-{req.round}-{stage}-sla-{level}",
        )
    return True


def approvals_sla_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Remind before due, escalate when overdue: to the stage's deciders (a division's leads and
    their delegates; the executives and theirs), then, for a division review still overdue
    after another SLA period, to the executives. Returns how many of each it sent."""
    now = now or timezone.now()
    sent = {"reminder": 0, "overdue": 0, "executives": 0}
    pending = (
        ComputeRequest.objects.filter(
            status__in=[Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE]
        )
        .select_related("project__team__division", "pool", "requester")
        .order_by("stage_entered_at", "id")
    )
    for req in pending.iterator(chunk_size=500):
        stage = PENDING_STAGE[Status(req.status)]
        entered = req.stage_entered_at or req.submitted_at
        if entered is None:
            continue
        due = due_at(stage, req.priority, entered)
        what = f"request #{req.pk} ({req.gpus} GPUs of {req.pool} for {req.project})"
        stage_words = Stage(stage).label.lower()
        when = timezone.localtime(due).strftime("%Y-%m-%d %H:%M")
        if now >= _reminder_before(stage, req.priority, entered, due) and now < due:
            sent["reminder"] += _step(
                req,
                stage,
                "reminder",
                now=now,
                recipients=_deciders(req, stage, now),
                message=f"Reminder: the {stage_words} of {what} is due {when}.",
            )
        if now >= due:
            sent["overdue"] += _step(
                req,
                stage,
                "overdue",
                now=now,
                recipients=_deciders(req, stage, now),
                message=f"Overdue: the {stage_words} of {what} was due {when}.",
            )
        if stage == Stage.DIVISION and now >= _escalate_to_executives_after(due, entered):
            sent["executives"] += _step(
                req,
                stage,
                "executives",
                now=now,
                recipients=_executives(req),
                message=f"Escalated to you: the {stage_words} of {what} was due {when} and "
                f"{req.project.team.division}'s leads have not decided it.",
            )
    return sent


def approvals_digest(*, now: datetime | None = None) -> int:
    """Once a day: each decider gets one message listing what waits for them, oldest first.
    Returns the number of digests sent."""
    from .selectors import inbox_for

    now = now or timezone.now()
    day = timezone.localtime(now).date().isoformat()
    User = get_user_model()
    # Everyone who may decide something: role holders and active delegates.
    ids = set(
        RoleGrant.objects.filter(
            role__in=[RoleGrant.Role.DIVISION_LEAD, RoleGrant.Role.EXECUTIVE]
        ).values_list("user", flat=True)
    ) | set(Delegation.objects.active(now).values_list("delegate", flat=True))
    count = 0
    for user in User.objects.filter(pk__in=ids, is_active=True).order_by("pk"):
        waiting = list(inbox_for(user)[:50])
        if not waiting:
            continue
        lines = []
        for req in waiting:
            due = due_for(req, now=now)
            lines.append(
                f"#{req.pk} {req.gpus} GPUs of {req.pool} for {req.project}"
                + (f", {due.words}" if due else "")
            )
        created = notify(
            recipients=[user],
            kind=Notification.Kind.INFO,
            message=f"{len(waiting)} request{'s' if len(waiting) != 1 else ''} wait for your "
            "decision, oldest first: " + "; ".join(lines),
            link=reverse("requests:inbox"),
            dedupe_key=f"digest-{day}",
        )
        count += len(created)
    return count
