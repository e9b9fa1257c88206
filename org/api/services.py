"""Writes behind the org API. (Here rather than org/services.py only because this work owns the
org/api package; move it when org grows a services module.)"""

from __future__ import annotations

from datetime import date

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from audit.services import audit_record
from org.models import Project, Team
from org.roles import roles_of


@transaction.atomic
def project_create(
    *,
    actor,
    team_id: int,
    name: str,
    description: str = "",
    expected_end: date | None = None,
    confidential: bool = False,
) -> Project:
    """A team member creates a project of their team. Names are unique (whatever the case)."""
    name = name.strip()
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise ValidationError({"team": ["No such team."]})
    if not roles_of(actor).member_of(team.pk):
        raise PermissionDenied("You can only create projects for a team you belong to.")
    if not name:
        raise ValidationError({"name": ["A project needs a name."]})
    if Project.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": [f"A project named “{name}” exists already."]})
    try:
        # The savepoint keeps the outer transaction usable when a concurrent create won the
        # name between the check above and this insert (the unique index decides).
        with transaction.atomic():
            project = Project.objects.create(
                team=team,
                name=name,
                description=description,
                expected_end=expected_end,
                confidential=confidential,
            )
    except IntegrityError:
        raise ValidationError({"name": [f"A project named “{name}” exists already."]}) from None
    audit_record(
        actor=actor,
        action="project.create",
        obj=project,
        after={
            "name": project.name,
            "team": team.pk,
            "expected_end": project.expected_end,
            "confidential": project.confidential,
        },
    )
    return project
