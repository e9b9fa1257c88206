"""Who may see and do what with pools and allocations (PRODUCT.md sections 1 and 2). Shared by
the pages, the API and the services."""

from __future__ import annotations

from django.db.models import Q

from org.roles import roles_of


def sees_everything(user) -> bool:
    roles = roles_of(user)
    return roles.is_executive or roles.is_compute_ops


def can_see_confidential(user, project) -> bool:
    """A confidential project's requests, justifications and allocations are visible only to
    its team, its division's leads, executives and compute ops. Others may know it exists."""
    if not project.confidential:
        return True
    roles = roles_of(user)
    return (
        roles.is_executive
        or roles.is_compute_ops
        or roles.member_of(project.team_id)
        or roles.leads(project.team.division_id)
    )


def visible_projects_q(user, prefix: str = "") -> Q:
    """Rows whose project (reached through `prefix`) the user may see in detail."""
    if sees_everything(user):
        return Q()
    roles = roles_of(user)
    return (
        Q(**{f"{prefix}confidential": False})
        | Q(**{f"{prefix}team_id__in": list(roles.team_ids)})
        | Q(**{f"{prefix}team__division_id__in": list(roles.lead_division_ids)})
    )


def can_release(user, allocation) -> bool:
    return roles_of(user).member_of(allocation.project.team_id)


def can_manage_pools(user) -> bool:
    return roles_of(user).is_compute_ops
