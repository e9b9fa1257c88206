"""What a user may act as. Read once per request and cached on the user object, so templates,
policies and views ask without extra queries."""

from dataclasses import dataclass, field

from .models import Membership, RoleGrant


@dataclass(frozen=True)
class Roles:
    authenticated: bool = False
    is_admin: bool = False
    is_executive: bool = False
    is_compute_ops: bool = False
    lead_division_ids: frozenset[int] = field(default_factory=frozenset)
    team_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_division_lead(self) -> bool:
        return bool(self.lead_division_ids)

    @property
    def is_researcher(self) -> bool:
        return bool(self.team_ids)

    def leads(self, division_id: int) -> bool:
        return division_id in self.lead_division_ids

    def member_of(self, team_id: int) -> bool:
        return team_id in self.team_ids

    @property
    def labels(self) -> list[str]:
        labels = []
        if self.is_researcher:
            labels.append("researcher")
        if self.is_division_lead:
            labels.append("division lead")
        if self.is_executive:
            labels.append("executive")
        if self.is_compute_ops:
            labels.append("compute ops")
        if self.is_admin:
            labels.append("admin")
        return labels


ANONYMOUS = Roles()


def roles_of(user) -> Roles:
    if user is None or not user.is_authenticated:
        return ANONYMOUS
    cached = getattr(user, "_allotment_roles", None)
    if cached is not None:
        return cached
    grants = list(RoleGrant.objects.filter(user=user).values_list("role", "division_id"))
    roles = Roles(
        authenticated=True,
        is_admin=bool(user.is_superuser or user.is_staff),
        is_executive=any(role == RoleGrant.Role.EXECUTIVE for role, _ in grants),
        is_compute_ops=any(role == RoleGrant.Role.COMPUTE_OPS for role, _ in grants),
        lead_division_ids=frozenset(
            division for role, division in grants if role == RoleGrant.Role.DIVISION_LEAD
        ),
        team_ids=frozenset(Membership.objects.filter(user=user).values_list("team_id", flat=True)),
    )
    user._allotment_roles = roles
    return roles


def forget_roles(user) -> None:
    """Drop the cached roles, e.g. after a grant changed in the same request or test."""
    if hasattr(user, "_allotment_roles"):
        del user._allotment_roles
