"""The identity provider as configured from the environment (PRODUCT.md section 9): discovery of
its endpoints, and the mapping of its groups to Allotment teams and roles."""

from __future__ import annotations

import json
from dataclasses import dataclass

import requests
from django.conf import settings
from django.core.cache import cache

DISCOVERY_PATH = "/.well-known/openid-configuration"
# Every web process reads the provider's metadata from the shared cache rather than fetching it
# on each sign-in; an hour keeps a key rotation or an endpoint move from going unseen for long.
DISCOVERY_CACHE_SECONDS = 3600
HTTP_TIMEOUT_SECONDS = 10

ROLES = ("division_lead", "executive", "compute_ops")


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be read or does not describe it."""


def oidc_enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def provider_name() -> str:
    return settings.OIDC_PROVIDER_NAME or "single sign-on"


def provider_metadata() -> dict:
    """The provider's discovery document. Its `issuer` must be the configured one exactly (OpenID
    Connect Discovery 1.0, section 4.3), else a look-alike document could name other keys."""
    issuer = settings.OIDC_ISSUER
    key = f"oidc-discovery:{issuer}"
    metadata = cache.get(key)
    if metadata is not None:
        return metadata
    url = issuer.rstrip("/") + DISCOVERY_PATH
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()
        metadata = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"cannot read {url}: {exc}") from exc
    if metadata.get("issuer") != issuer:
        raise ProviderUnavailable(
            f"{url} names the issuer {metadata.get('issuer')!r}, not {issuer!r}"
        )
    for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not metadata.get(field):
            raise ProviderUnavailable(f"{url} has no {field}")
    cache.set(key, metadata, DISCOVERY_CACHE_SECONDS)
    return metadata


@dataclass(frozen=True)
class Grant:
    """What one IdP group gives: membership of a team, or a role (of a division for leads)."""

    team: str | None = None
    role: str | None = None
    division: str | None = None

    def describe(self) -> str:
        if self.team:
            return f"member of {self.team}"
        if self.division:
            return f"{self.role} of {self.division}"
        return str(self.role)


def parse_group_mapping(raw) -> dict[str, Grant]:
    """ALLOTMENT_OIDC_GROUPS, from JSON text or an already-parsed dict. Raises ValueError naming
    the first group whose grant is not one of the four shapes section 9 allows."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object mapping a group to a grant")
    mapping: dict[str, Grant] = {}
    for group, spec in raw.items():
        if not isinstance(spec, dict):
            raise ValueError(f"group {group!r}: the grant must be an object")
        keys = set(spec)
        if keys == {"team"} and isinstance(spec["team"], str) and spec["team"]:
            mapping[group] = Grant(team=spec["team"])
        elif keys == {"role", "division"} and spec["role"] == "division_lead":
            if not isinstance(spec["division"], str) or not spec["division"]:
                raise ValueError(f"group {group!r}: division_lead needs a division name")
            mapping[group] = Grant(role="division_lead", division=spec["division"])
        elif keys == {"role"} and spec["role"] in ("executive", "compute_ops"):
            mapping[group] = Grant(role=spec["role"])
        else:
            raise ValueError(
                f"group {group!r}: expected {{'team': name}}, {{'role': 'division_lead', "
                f"'division': name}}, {{'role': 'executive'}} or {{'role': 'compute_ops'}}, "
                f"got {spec!r}"
            )
    return mapping


def group_mapping() -> dict[str, Grant]:
    return parse_group_mapping(settings.ALLOTMENT_OIDC_GROUPS)


def groups_from_claims(claims: dict) -> set[str]:
    """The groups claim as a set of names. Some providers send one string instead of a list."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM or "groups")
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {str(v) for v in value}
    return set()
