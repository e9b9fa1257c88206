"""Writes for sign-in through the identity provider: the user, their IdP identity, and the teams
and roles their IdP groups map to (PRODUCT.md section 9)."""

from __future__ import annotations

import logging
import re

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from org.models import Division, Membership, RoleGrant, Team
from org.roles import forget_roles

from .models import OidcIdentity
from .oidc import Grant, group_mapping, groups_from_claims

logger = logging.getLogger("accounts.oidc")

User = get_user_model()
USERNAME_MAX: int = User._meta.get_field("username").max_length or 150


class ClaimsRefused(Exception):
    """The provider's claims do not describe a person we can sign in."""


def _wanted_username(claims: dict) -> str:
    raw = claims.get("preferred_username") or (claims.get("email") or "").split("@")[0]
    # Django usernames allow letters, digits and @.+-_ only.
    name = re.sub(r"[^\w.@+-]", "", str(raw))[: USERNAME_MAX - 8]
    return name or "user"


def _free_username(wanted: str) -> str:
    if not User.objects.filter(username__iexact=wanted).exists():
        return wanted
    n = 2
    while User.objects.filter(username__iexact=f"{wanted}-{n}").exists():
        n += 1
    return f"{wanted}-{n}"


def _profile(claims: dict) -> dict:
    return {
        "email": (claims.get("email") or "")[:254],
        "first_name": (claims.get("given_name") or "")[:150],
        "last_name": (claims.get("family_name") or "")[:150],
    }


def _user_for_identity(*, issuer: str, subject: str, claims: dict):
    identity = (
        OidcIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    if identity is not None:
        return identity.user, identity, False
    wanted = _wanted_username(claims)
    # A person who already had a local account keeps it when they first sign in through the
    # IdP with the same username. Never an admin account: an IdP user named "admin" must not
    # become the installation's administrator.
    user = (
        User.objects.select_for_update()
        .filter(username__iexact=wanted, is_staff=False, is_superuser=False)
        .exclude(oidc_identities__isnull=False)
        .first()
    )
    created = user is None
    if user is None:
        user = User(username=_free_username(wanted), **_profile(claims))
        user.set_unusable_password()
        user.save()
    identity = OidcIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    return user, identity, created


def oidc_user_sync(*, issuer: str, claims: dict):
    """Create or update the user the provider vouches for, and apply the group mapping. Runs on
    every sign-in, so a group removed at the IdP takes the grant away at the next one."""
    subject = claims.get("sub")
    if not subject or not isinstance(subject, str):
        raise ClaimsRefused("the provider sent no subject (sub)")
    try:
        with transaction.atomic():
            user, identity, created = _user_for_identity(
                issuer=issuer, subject=subject, claims=claims
            )
    except IntegrityError:
        # The same person's first sign-in in two tabs at once: the other one created the identity.
        with transaction.atomic():
            user, identity, created = _user_for_identity(
                issuer=issuer, subject=subject, claims=claims
            )
    with transaction.atomic():
        if not user.is_active:
            raise ClaimsRefused(f"the account {user.username} is deactivated")
        profile = _profile(claims)
        changed = [field for field, value in profile.items() if getattr(user, field) != value]
        if changed and not created:
            for field in changed:
                setattr(user, field, profile[field])
            user.save(update_fields=changed)
        identity.last_login_at = timezone.now()
        identity.save(update_fields=["last_login_at"])
        if created:
            audit_record(
                actor=None,
                action="user.create",
                obj=user,
                after={"username": user.username, "issuer": issuer, "subject": subject},
                message=f"First sign-in of {user.username} through the identity provider.",
            )
        grants_apply(user=user, groups=groups_from_claims(claims))
    return user


def _grant_state(user) -> dict:
    teams = sorted(Membership.objects.filter(user=user).values_list("team__name", flat=True))
    roles = sorted(
        f"{role} of {division}" if division else role
        for role, division in RoleGrant.objects.filter(user=user).values_list(
            "role", "division__name"
        )
    )
    return {"teams": teams, "roles": roles}


def grants_apply(*, user, groups: set[str]) -> bool:
    """Make the user's mapped teams and roles match their IdP groups. Only what the mapping
    names is managed: a grant given by hand, for a team or role no group maps to, is left
    alone. Returns whether anything changed (and then an audit row says what)."""
    mapping = group_mapping()
    wanted = {grant for group, grant in mapping.items() if group in groups}
    managed = set(mapping.values())

    # Team and division names are unique ignoring case, and so is the mapping matched.
    teams, divisions = {}, {}
    for grant in managed:
        if grant.team and grant.team.lower() not in teams:
            team = Team.objects.filter(name__iexact=grant.team).first()
            if team is not None:
                teams[grant.team.lower()] = team
        if grant.division and grant.division.lower() not in divisions:
            division = Division.objects.filter(name__iexact=grant.division).first()
            if division is not None:
                divisions[grant.division.lower()] = division

    def resolvable(grant: Grant) -> bool:
        if grant.team and grant.team.lower() not in teams:
            logger.warning("ALLOTMENT_OIDC_GROUPS names the unknown team %r", grant.team)
            return False
        if grant.division and grant.division.lower() not in divisions:
            logger.warning("ALLOTMENT_OIDC_GROUPS names the unknown division %r", grant.division)
            return False
        return True

    before = _grant_state(user)
    for grant in managed:
        if not resolvable(grant):
            continue
        if grant.team:
            team = teams[grant.team.lower()]
            if grant in wanted:
                Membership.objects.get_or_create(team=team, user=user)
            else:
                Membership.objects.filter(team=team, user=user).delete()
            continue
        division = divisions[grant.division.lower()] if grant.division else None
        if grant in wanted:
            RoleGrant.objects.get_or_create(user=user, role=grant.role, division=division)
        else:
            RoleGrant.objects.filter(user=user, role=grant.role, division=division).delete()
    after = _grant_state(user)
    forget_roles(user)
    if before == after:
        return False
    audit_record(
        actor=None,
        action="user.grants_sync",
        obj=user,
        before=before,
        after=after,
        message=f"Teams and roles of {user.username} follow their identity provider groups "
        f"({', '.join(sorted(groups)) or 'none'}).",
    )
    return True
