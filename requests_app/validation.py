"""Input cleaning for compute requests, shared by the form and the API (through the services):
one answer per field, in words a person reads."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

from allocator import selectors as allocator_selectors
from allocator.models import Allocation, Pool
from org.models import Project
from org.roles import roles_of

from .models import JUSTIFICATION_MAX, ComputeRequest

# A start this close to "now" still counts as now: the form takes a minute to fill in.
START_GRACE = timedelta(minutes=10)

JUSTIFICATION_FIELDS = {
    "goal": "Say what the GPUs are for.",
    "expected_outcome": "Say what outcome or milestone you expect.",
    "size_rationale": "Say why this size and duration.",
    "impact_if_denied": "Say what happens if the request is not granted.",
}


def _as_int(value, field: str, errors: dict, message: str) -> int | None:
    if value is None or value == "":
        errors.setdefault(field, []).append(message)
        return None
    if isinstance(value, bool):
        errors.setdefault(field, []).append(message)
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        errors.setdefault(field, []).append(message)
        return None


def _clean_text(value, field: str, errors: dict) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = text.strip()
    if not text:
        errors.setdefault(field, []).append(JUSTIFICATION_FIELDS[field])
    elif len(text) > JUSTIFICATION_MAX:
        errors.setdefault(field, []).append(
            f"At most {JUSTIFICATION_MAX} characters (this has {len(text)})."
        )
    elif "\x00" in text:
        errors.setdefault(field, []).append("Remove the null character from the text.")
    # Markup is kept as typed and always rendered escaped: it is shown, never executed.
    return text


def request_clean(*, user, data: dict, now: datetime | None = None) -> dict:
    """Check a request's fields as a whole and return them cleaned, or raise ValidationError with
    one message per field. `data` holds project/pool/target_allocation as ids."""
    now = now or timezone.now()
    errors: dict[str, list[str]] = {}
    roles = roles_of(user)
    cleaned: dict = {}

    project = None
    project_id = _as_int(
        data.get("project"), "project", errors, "Choose one of your teams' projects."
    )
    if project_id is not None:
        project = Project.objects.select_related("team").filter(pk=project_id).first()
        # Unknown and foreign projects answer alike: their existence is not revealed.
        if project is None or not roles.member_of(project.team_id):
            errors["project"] = ["Unknown project, or not a project of your teams."]
            project = None
        elif project.state == Project.State.ENDED:
            errors["project"] = [f"{project.name} has ended; it cannot ask for GPUs."]
            project = None
    cleaned["project"] = project

    pool = None
    pool_id = _as_int(data.get("pool"), "pool", errors, "Choose a pool.")
    if pool_id is not None:
        pool = Pool.objects.filter(pk=pool_id).first()
        if pool is None:
            errors["pool"] = ["Unknown pool."]
    cleaned["pool"] = pool

    kind = data.get("kind") or ComputeRequest.Kind.NEW
    if kind not in ComputeRequest.Kind.values:
        errors["kind"] = [f"Kind must be one of: {', '.join(ComputeRequest.Kind.values)}."]
        kind = None
    cleaned["kind"] = kind

    priority = data.get("priority") or ComputeRequest.Priority.NORMAL
    if priority not in ComputeRequest.Priority.values:
        errors["priority"] = [
            f"Priority must be one of: {', '.join(ComputeRequest.Priority.values)}."
        ]
    cleaned["priority"] = priority
    cleaned["flexible_start"] = bool(data.get("flexible_start", False))

    gpus = _as_int(data.get("gpus"), "gpus", errors, "Give a whole number of GPUs.")
    start, end = data.get("start"), data.get("end")
    if not isinstance(start, datetime):
        errors.setdefault("start", []).append("Give a start date and time.")
        start = None
    if not isinstance(end, datetime):
        errors.setdefault("end", []).append("Give an end date and time.")
        end = None

    target = None
    target_id = data.get("target_allocation")
    if kind == ComputeRequest.Kind.NEW:
        if target_id not in (None, ""):
            errors["target_allocation"] = [
                "Only an increase or an extension names an allocation to grow."
            ]
    elif kind is not None:
        target_id = _as_int(
            target_id,
            "target_allocation",
            errors,
            f"An {kind} names one of the project's allocations in this pool.",
        )
        if target_id is not None:
            target = Allocation.objects.filter(
                pk=target_id, state=Allocation.State.ACTIVE, end__gt=now
            ).first()
            if (
                target is None
                or project is None
                or pool is None
                or target.project_id != project.pk
                or target.pool_id != pool.pk
            ):
                errors["target_allocation"] = [
                    "Choose an active allocation of the same project and pool."
                ]
                target = None
        if kind == ComputeRequest.Kind.EXTENSION and target is not None:
            # An extension moves the allocation's end: it starts where the allocation ends now
            # and keeps its GPUs (contract with the engine).
            start, gpus = target.end, target.gpus
            errors.pop("start", None)
            errors.pop("gpus", None)
            if end is not None and end <= target.end:
                errors["end"] = [
                    f"An extension must end after the allocation's current end "
                    f"({timezone.localtime(target.end):%Y-%m-%d %H:%M})."
                ]
    cleaned["target_allocation"] = target

    if gpus is not None:
        if gpus <= 0:
            errors["gpus"] = ["Ask for at least one GPU."]
        elif pool is not None:
            most = allocator_selectors.max_capacity(pool.pk)
            if gpus > most:
                errors["gpus"] = [f"{pool.name} will never hold more than {most} GPUs."]
    cleaned["gpus"] = gpus

    if start is not None and kind != ComputeRequest.Kind.EXTENSION and start < now - START_GRACE:
        errors.setdefault("start", []).append("The start is in the past.")
    if start is not None and end is not None and end <= start and "end" not in errors:
        errors["end"] = ["The end must be after the start."]
    cleaned["start"], cleaned["end"] = start, end

    for field in JUSTIFICATION_FIELDS:
        cleaned[field] = _clean_text(data.get(field), field, errors)

    if errors:
        raise ValidationError(errors)
    return cleaned
