"""Who may see a project's details: the one confidentiality rule (PRODUCT.md section 2), used by
every page, API, selector and the audit API.

A confidential project's requests, justifications and allocations are visible only to its team,
its division's leads, executives and compute ops; others may know it exists (its name in lists,
its GPUs in a pool's totals), never what it asked for. Any other project is visible to all.

Django admins (is_staff / is_superuser) are *not* in that list: operating the installation is not
a reason to read a confidential justification. An admin sees a confidential project only through
a role that sees it (team member, lead of its division, executive, compute ops).

requests_app adds its draft rule on top (a draft is the team's own working copy)."""

from __future__ import annotations

from django.db.models import Q

from .roles import Roles, roles_of


def _sees_every_project(roles: Roles) -> bool:
    return roles.is_executive or roles.is_compute_ops


def sees_every_project(user) -> bool:
    """Executives and compute ops see every project, confidential ones included."""
    return _sees_every_project(roles_of(user))


def can_see_project(user, project) -> bool:
    """May `user` see the details of `project` (its requests, justifications, allocations)?
    Reads `project.team.division_id`: select the team with the project."""
    if not project.confidential:
        return True
    roles = roles_of(user)
    return (
        _sees_every_project(roles)
        or roles.member_of(project.team_id)
        or roles.leads(project.team.division_id)
    )


def visible_projects_q(user, prefix: str = "") -> Q:
    """can_see_project as a filter on Project; `prefix` reaches the project from another model
    (e.g. "project__" on allocations and requests)."""
    roles = roles_of(user)
    if _sees_every_project(roles):
        return Q()
    return (
        Q(**{f"{prefix}confidential": False})
        | Q(**{f"{prefix}team_id__in": list(roles.team_ids)})
        | Q(**{f"{prefix}team__division_id__in": list(roles.lead_division_ids)})
    )
