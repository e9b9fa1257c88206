"""Project list and project page (PRODUCT.md section 5): allocations, requests, end date, state;
a confidential project's requests and allocations only for those allowed."""

import pytest
from django.urls import reverse

from tests import factories
from tests.factories import in_days


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
    assert "Atlas" in body and "24" in body and "Page 1 of 2" in body
    assert "Atlas" in client.get(reverse("org:project-list") + "?q=atl").content.decode()
    assert "P001" not in client.get(reverse("org:project-list") + "?q=atl").content.decode()
    # nonsense filters are ignored, not errors
    assert client.get(reverse("org:project-list") + "?state=bogus&page=xyz").status_code == 200


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
