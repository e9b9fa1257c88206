"""org/visibility.py: the one confidentiality rule (PRODUCT.md section 2). A confidential project's
details are seen by its team, its division's leads, executives and compute ops; nobody else,
Django admins included unless they hold one of those roles."""

import pytest
from django.contrib.auth.models import AnonymousUser

from allocator.models import Allocation
from org.models import Project, RoleGrant
from org.roles import forget_roles
from org.visibility import can_see_project, sees_every_project, visible_projects_q
from tests import factories

SEES_SECRET = {
    "requester": True,
    "teammate": True,
    "division_lead": True,
    "executive": True,
    "ops": True,
    "outsider": False,
    "other_lead": False,
    "admin_user": False,
}


@pytest.fixture
def secret(team):
    return factories.ProjectFactory(team=team, name="Secret", confidential=True)


def _visible_names(user) -> set[str]:
    return set(Project.objects.filter(visible_projects_q(user)).values_list("name", flat=True))


@pytest.mark.parametrize(("persona", "sees"), SEES_SECRET.items())
def test_confidential_project_only_to_its_circle(request, persona, sees, project, secret):
    # given a user in one persona, an open project and a confidential one of Research's team
    user = request.getfixturevalue(persona)
    # when / then: the predicate and the filter agree, and the open project is seen by all
    assert can_see_project(user, secret) is sees
    assert can_see_project(user, project) is True
    assert _visible_names(user) == ({"Atlas", "Secret"} if sees else {"Atlas"})


def test_a_django_admin_sees_it_only_through_a_role(admin_user, research, secret):
    # given a superuser with no product role
    assert not can_see_project(admin_user, secret)
    assert not sees_every_project(admin_user)
    # when they become a lead of the project's division
    factories.RoleGrantFactory(
        user=admin_user, role=RoleGrant.Role.DIVISION_LEAD, division=research
    )
    forget_roles(admin_user)
    # then they see it, as any lead of that division does
    assert can_see_project(admin_user, secret)
    assert "Secret" in _visible_names(admin_user)


def test_a_team_member_of_another_division_does_not_see_it(outsider, secret, other_team):
    # given a researcher of Applications (outsider), and a lead of Applications
    assert not can_see_project(outsider, secret)
    lead = factories.UserFactory()
    factories.RoleGrantFactory(
        user=lead, role=RoleGrant.Role.DIVISION_LEAD, division_id=other_team.division_id
    )
    # then neither sees Research's confidential project
    assert not can_see_project(lead, secret)
    assert "Secret" not in _visible_names(lead)


def test_prefix_reaches_the_project_from_allocations(outsider, requester, pool, secret, project):
    # given one allocation of each project
    factories.AllocationFactory(pool=pool, project=secret, gpus=4)
    open_one = factories.AllocationFactory(pool=pool, project=project, gpus=2)

    # then the outsider's filter keeps only the open project's allocation, the team's both
    def seen(user):
        return set(Allocation.objects.filter(visible_projects_q(user, "project__")))

    assert seen(outsider) == {open_one}
    assert len(seen(requester)) == 2


def test_anonymous_sees_only_open_projects(project, secret):
    anonymous = AnonymousUser()
    assert not can_see_project(anonymous, secret)
    assert _visible_names(anonymous) == {"Atlas"}
