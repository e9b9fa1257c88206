"""Fixtures for requests_app: requests built in any state, with the steps and change rows that
state implies (the engine's allocator.services is the real one)."""

import pytest
from rest_framework.test import APIClient

from requests_app.workflow import Status
from tests import factories
from tests.support.requests import build_request, valid_request_body


@pytest.fixture
def api():
    def client(user=None):
        c = APIClient()
        if user is not None:
            c.force_authenticate(user)
        return c

    return client


@pytest.fixture
def web(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def second_lead(research):
    """Another Research lead: decides the division stage where the tested lead must not."""
    from org.models import RoleGrant

    user = factories.UserFactory(username="rlead2")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    return user


@pytest.fixture
def make_request(requester, project, pool, second_lead):
    """Build a request in `status`, as the workflow would have left it."""

    def build(status=Status.DRAFT, *, division_decider=None, needs_executive=None, **fields):
        return build_request(
            status,
            requester=fields.pop("requester", requester),
            project=fields.pop("project", project),
            pool=fields.pop("pool", pool),
            division_decider=division_decider or second_lead,
            needs_executive=needs_executive,
            **fields,
        )

    return build


# A valid body for the API and the service (the requests tests call it request_data).
request_data = valid_request_body
