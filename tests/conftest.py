"""Shared fixtures: the test database is real PostgreSQL and Celery talks to real Redis (see
config/settings/test.py). Personas follow PRODUCT.md section 1."""

import pytest
from django.conf import settings
from django.db import connection

from org.models import RoleGrant
from tests import factories
from tests.support.slurm import slurm, slurm_cluster  # noqa: F401 — the private Slurm cluster


def pytest_configure(config):
    engine = settings.DATABASES["default"]["ENGINE"]
    assert engine == "django.db.backends.postgresql", f"tests need PostgreSQL, not {engine}"
    assert not settings.CELERY_TASK_ALWAYS_EAGER, "tests never run Celery eagerly"


@pytest.fixture
def research(db):
    return factories.DivisionFactory(name="Research", slug="research")


@pytest.fixture
def applications(db):
    return factories.DivisionFactory(name="Applications", slug="applications")


@pytest.fixture
def pool(db):
    return factories.PoolFactory(cluster="east", gpu_model="H100", capacity=64)


@pytest.fixture
def team(research):
    return factories.TeamFactory(division=research, name="Pretraining", slug="pretraining")


@pytest.fixture
def other_team(applications):
    return factories.TeamFactory(division=applications, name="Assistant", slug="assistant")


@pytest.fixture
def project(team):
    return factories.ProjectFactory(team=team, name="Atlas")


@pytest.fixture
def requester(team):
    user = factories.UserFactory(username="rita")
    factories.MembershipFactory(team=team, user=user)
    return user


@pytest.fixture
def teammate(team):
    user = factories.UserFactory(username="tom")
    factories.MembershipFactory(team=team, user=user)
    return user


@pytest.fixture
def outsider(other_team):
    user = factories.UserFactory(username="paul")
    factories.MembershipFactory(team=other_team, user=user)
    return user


@pytest.fixture
def division_lead(research):
    user = factories.UserFactory(username="rlead")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    return user


@pytest.fixture
def other_lead(applications):
    user = factories.UserFactory(username="alead")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.DIVISION_LEAD, division=applications)
    return user


@pytest.fixture
def executive(db):
    user = factories.UserFactory(username="exec")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.EXECUTIVE)
    return user


@pytest.fixture
def ops(db):
    user = factories.UserFactory(username="ops")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.COMPUTE_OPS)
    return user


@pytest.fixture
def admin_user(db):
    return factories.UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def test_database_name(db):
    return connection.settings_dict["NAME"]


from tests.support.fixtures import celery_worker_process  # noqa: E402, F401


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests.support import figures

    table = figures.write_and_format()
    if table:
        terminalreporter.section("Allotment figures (also in test-output/figures.json)")
        terminalreporter.write_line(table)
    bad = figures.failures()
    if bad:
        terminalreporter.write_line(
            f"FIGURES THAT MUST BE ZERO ARE NOT: {', '.join(sorted(bad))}", red=True
        )


def pytest_sessionfinish(session, exitstatus):
    from tests.support import figures

    if figures.failures() and session.exitstatus == 0:
        session.exitstatus = 1
