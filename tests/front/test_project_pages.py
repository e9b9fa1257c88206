"""Project list and project page (PRODUCT.md section 5): allocations, requests, end date, state;
a confidential project's requests and allocations only for those allowed."""

import pytest
from django.urls import reverse

from org.models import Project
from tests import factories
from tests.factories import in_days
from tests.support.navigation import walk

PROJECT_PAGE_QUERIES = 11


@pytest.fixture
def secret(team, pool, requester):
    project = factories.ProjectFactory(team=team, name="Skunkworks", confidential=True)
    factories.AllocationFactory(pool=pool, project=project, gpus=12)
    factories.ComputeRequestFactory(
        project=project,
        pool=pool,
        requester=requester,
        status="pending_division",
        goal="Top secret goal",
    )
    return project


def test_project_list_paginated_with_gpus_held(
    client, requester, project, pool, django_assert_max_num_queries
):
    factories.AllocationFactory(pool=pool, project=project, gpus=24)
    for i in range(60):
        factories.ProjectFactory(team=project.team, name=f"P{i:03d}")
    client.force_login(requester)
    with django_assert_max_num_queries(10):
        response = client.get(reverse("org:project-list"))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Atlas" in body and "24" in body and "Next →" in body
    assert "Atlas" in client.get(reverse("org:project-list") + "?q=atl").content.decode()
    assert "P001" not in client.get(reverse("org:project-list") + "?q=atl").content.decode()
    # nonsense filters and cursors are ignored, not errors
    bogus = "?state=bogus&page=xyz&cursor=older.xyz"
    assert client.get(reverse("org:project-list") + bogus).status_code == 200


def test_project_list_walks_to_the_end_by_name_with_its_filter(client, requester, project):
    # given 120 projects matching the search and some that do not
    team = project.team
    wanted = {factories.ProjectFactory(team=team, name=f"Run {i:03d}").pk for i in range(120)}
    for i in range(10):
        factories.ProjectFactory(team=team, name=f"Other {i}")
    client.force_login(requester)

    # when the list is walked through "Next" to the end
    seen = walk(
        client,
        reverse("org:project-list"),
        lambda r: [p.pk for p in r.context["page"]],
        first="q=run",
    )

    # then every matching project shows once, by name
    assert sorted(seen) == sorted(wanted) and len(seen) == len(set(seen))
    names = dict(Project.objects.filter(pk__in=seen).values_list("pk", "name"))
    assert [names[pk] for pk in seen] == [f"Run {i:03d}" for i in range(120)]


@pytest.mark.parametrize("n", [2, 40])
def test_project_page_query_count_does_not_grow(client, requester, project, pool, n):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(n):
        factories.AllocationFactory(pool=pool, project=project, gpus=1)
        factories.ComputeRequestFactory(project=project, pool=pool, requester=requester)
    client.force_login(requester)
    url = reverse("org:project-detail", args=[project.pk])
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    # session, user, roles (2), project, allocations page (+ usage), GPUs held, scheduled
    # reclaims, requests page, unread count: the same at 2 and at 40 of each
    assert len(queries) == PROJECT_PAGE_QUERIES


@pytest.mark.parametrize("persona", ["requester", "division_lead", "executive", "ops"])
def test_confidential_project_visible_to_the_allowed(client, secret, persona, request):
    client.force_login(request.getfixturevalue(persona))
    body = client.get(reverse("org:project-detail", args=[secret.pk])).content.decode()
    assert "Allocations" in body and "pending" in body.lower()
    assert "12" in body


@pytest.mark.parametrize("persona", ["outsider", "other_lead"])
def test_confidential_project_hides_requests_from_others(client, secret, persona, request):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(reverse("org:project-detail", args=[secret.pk]))
    body = response.content.decode()
    assert response.status_code == 200  # it exists
    assert "Skunkworks" in body and "confidential" in body
    assert "Top secret goal" not in body and "Requests</h2>" not in body
    assert "Allocations</h2>" not in body


def test_project_page_lists_allocations_and_requests(
    client, requester, outsider, project, pool, django_assert_max_num_queries
):
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=8, end=in_days(20))
    req = factories.ComputeRequestFactory(
        project=project, pool=pool, requester=requester, status="pending_division"
    )
    draft = factories.ComputeRequestFactory(
        project=project, pool=pool, requester=requester, status="draft"
    )
    for _ in range(10):
        factories.ComputeRequestFactory(
            project=project, pool=pool, requester=requester, status="pending_division"
        )
        factories.AllocationFactory(pool=pool, project=project)
    client.force_login(requester)
    # with the allocations paged (a count), GPUs held summed in SQL, the scheduled reclaims and
    # the GPU-hours measured (a prefetch): 13, whatever the number of rows
    with django_assert_max_num_queries(13):
        body = client.get(reverse("org:project-detail", args=[project.pk])).content.decode()
    assert reverse("requests:detail", args=[req.pk]) in body
    assert reverse("requests:detail", args=[draft.pk]) in body
    assert reverse("allocator:allocation-release", args=[allocation.pk]) in body
    # an outsider sees a non-confidential project's requests but not drafts nor release buttons
    client.force_login(outsider)
    body = client.get(reverse("org:project-detail", args=[project.pk])).content.decode()
    assert reverse("requests:detail", args=[req.pk]) in body
    assert reverse("requests:detail", args=[draft.pk]) not in body
    assert "Release now" not in body


def test_unknown_project_is_404(client, requester):
    client.force_login(requester)
    assert client.get(reverse("org:project-detail", args=[987654])).status_code == 404
