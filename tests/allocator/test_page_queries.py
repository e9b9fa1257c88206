"""The pool page and the ops console cost the same number of queries whatever the number of
allocations, reclaims and waiting changes (docs/performance.md), and the ops console names
things by project, team, pool and request number: no raw allocation or change id in its text."""

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from allocator.models import AllocationChange, Priority, Reclaim
from tests import factories

pytestmark = pytest.mark.django_db


def _grow(pool, team, ops, n: int, *, first_id: int):
    """n more allocations in `pool` (a third with a scheduled reclaim), n/2 waiting urgent
    changes with their requests, n/4 failed applies; ids from `first_id` on, far from the
    request numbers, so a raw id in the page text cannot pass for one."""
    now = timezone.now()
    for i in range(n):
        project = factories.ProjectFactory(team=team, expected_end=(now + timedelta(days=9)).date())
        allocation = factories.AllocationFactory(
            pk=first_id + i,
            pool=pool,
            project=project,
            gpus=4,
            start=now - timedelta(days=1 + i % 3),
            end=now + timedelta(days=5 + i),
        )
        if i % 3 == 0:
            Reclaim.objects.create(
                allocation=allocation,
                new_gpus=2,
                effective_at=now + timedelta(days=3),
                reason="Room for a launch",
                created_by=ops,
            )
        if i % 2 == 0:
            change = factories.AllocationChangeFactory(
                pk=first_id + i,
                pool=pool,
                project=project,
                gpus=64,
                status=AllocationChange.Status.WAITING,
                priority=Priority.URGENT,
            )
            factories.ComputeRequestFactory(project=project, pool=pool, change=change, gpus=64)
        if i % 4 == 1:
            change = factories.AllocationChangeFactory(
                pk=first_id + i,
                pool=pool,
                project=project,
                status=AllocationChange.Status.FAILED,
                last_error="boom",
            )
            factories.ComputeRequestFactory(project=project, pool=pool, change=change)


def _count(client, url) -> tuple[int, str]:
    client.get(url)  # caches (forecasts, roles) warm, as in the bench
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), response.content.decode()


@pytest.fixture
def busy(team, ops):
    pool = factories.PoolFactory(capacity=128)
    _grow(pool, team, ops, 4, first_id=700_000)
    return pool


def test_pool_page_queries_do_not_grow_with_its_allocations(client, busy, team, ops, executive):
    client.force_login(executive)
    url = reverse("allocator:pool-detail", args=[busy.pk])
    small, _ = _count(client, url)
    _grow(busy, team, ops, 60, first_id=710_000)
    large, page = _count(client, url)
    assert small == large
    assert "Reclaim scheduled" in page  # the reclaims are drawn ahead of time


def test_ops_console_queries_do_not_grow(client, busy, team, ops):
    client.force_login(ops)
    url = reverse("allocator:ops")
    small, _ = _count(client, url)
    _grow(busy, team, ops, 40, first_id=720_000)
    large, page = _count(client, url)
    assert small == large
    assert "Room for a launch" in page and "boom" in page


class _Text(HTMLParser):
    """The words a person reads: text nodes and the labels read aloud, not URLs or form values."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:
            if name in ("aria-label", "title", "placeholder") and value:
                self.parts.append(value)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def test_ops_console_shows_no_raw_allocation_or_change_id(client, busy, team, ops):
    # given allocations and changes whose ids (700,000 on) differ from every request number
    client.force_login(ops)
    _, page = _count(client, reverse("allocator:ops"))
    parser = _Text()
    parser.feed(page)
    text = " ".join(parser.parts)

    # then the console's text names none of them, and names the requests by number
    raw = [int(n) for n in re.findall(r"\d{6,}", text)]
    assert not [n for n in raw if 700_000 <= n < 800_000], raw
    assert "Allocation #" not in text and "change #" not in text.lower()
    assert re.search(r"Request #\d+", text)
    # and reclaiming is picking, not typing: the console's reclaim card opens the guided move
    assert reverse("allocator:ops-move") in page and 'name="reclaim-allocation"' not in page
