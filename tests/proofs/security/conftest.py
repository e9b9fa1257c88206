"""Shared pieces of the security proofs (PROOFS.md sections 2.4-2.7): a fingerprint of every
business table, API clients per persona, a world with one request in any state, and a recorder
of 5xx answers."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from org.models import RoleGrant
from tests import factories
from tests.support import figures
from tests.support.requests import (  # noqa: F401 — the tests import them from here
    build_request,
    valid_request_body,
)

# Every table whose rows are the product's state. Sessions, tokens and the sign-in log of
# django-axes are not business state.
BUSINESS_TABLES = [
    "org_division",
    "org_team",
    "org_membership",
    "org_project",
    "org_rolegrant",
    "allocator_pool",
    "allocator_capacitychange",
    "allocator_divisionshare",
    "allocator_allocationchange",
    "allocator_allocation",
    "allocator_reclaim",
    "allocator_ledgerentry",
    "requests_app_computerequest",
    "requests_app_approvalstep",
    "audit_auditevent",
    "notifications_notification",
    "common_idempotencyrecord",
]


# Reported even when nothing was found: a zero is a result.
REPORTED = [
    "bad inputs tried",
    "state changes caused by rejected input",
    "errors without a field-specific message",
    "unescaped XSS reflections",
    "HTML pages without CSP",
    "authorization cells checked",
    "unexpected allows",
    "unexpected denies",
    "SoD / stage-skip violations",
    "BOLA leaks",
    "mass-assignment fields accepted",
    "CSRF bypasses",
    "transitions without exactly one audit row",
    "audit tamper attempts that succeeded",
    "secrets found in logs",
    "schemathesis unique failures",
    "5xx responses",
]


@pytest.fixture(autouse=True)
def _report_zeros():
    for name in REPORTED:
        figures.add(name, 0)


def business_state() -> dict[str, tuple[int, str]]:
    """Row count and an md5 of the ordered rows of each business table."""
    parts = [
        f"SELECT '{t}', count(*), coalesce(md5(string_agg(md5(x::text), '' ORDER BY x.id)), '') "
        f"FROM {t} x"
        for t in BUSINESS_TABLES
    ]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts))
        return {name: (count, digest) for name, count, digest in cursor.fetchall()}


def state_diff(before: dict, after: dict) -> list[str]:
    return [t for t in BUSINESS_TABLES if before[t] != after[t]]


def count_5xx(response) -> None:
    """Count a 5xx answer unless the test settings' recorder middleware already does."""
    from django.conf import settings

    recorded = any("Count5xx" in m for m in settings.MIDDLEWARE)
    if response.status_code >= 500 and not recorded:
        figures.add("5xx responses")


@pytest.fixture
def api():
    def client(user=None):
        c = APIClient()
        if user is not None:
            c.force_authenticate(user)
        return c

    return client


@pytest.fixture
def second_lead(research):
    user = factories.UserFactory(username="rlead2")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    return user


@pytest.fixture
def second_exec(db):
    user = factories.UserFactory(username="exec2")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.EXECUTIVE)
    return user
