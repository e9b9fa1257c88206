"""Who may do what with pools and allocations (PRODUCT.md section 1). Shared by the pages, the
API and the services. Who may *see* a project's allocations is org.visibility's one rule."""

from __future__ import annotations

from org.roles import roles_of


def can_release(user, allocation) -> bool:
    return roles_of(user).member_of(allocation.project.team_id)


def can_manage_pools(user) -> bool:
    return roles_of(user).is_compute_ops
