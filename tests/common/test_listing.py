"""common/listing.py: the capped count and the capped paginator (the keyset walk is tested on
the lists themselves: tests/requests_app/test_list_navigation.py, tests/front/)."""

import pytest
from django.contrib.auth import get_user_model

from common.listing import CappedPaginator, capped_count_label
from tests import factories

pytestmark = pytest.mark.django_db


def test_capped_count_says_plus_past_the_cap():
    users = get_user_model().objects.all()
    for _ in range(7):
        factories.UserFactory()
    assert capped_count_label(users, cap=10) == "7"
    assert capped_count_label(users, cap=7) == "7"
    assert capped_count_label(users, cap=6) == "6+"


def test_capped_paginator_serves_pages_past_the_cap_to_the_end():
    made = [factories.UserFactory().pk for _ in range(23)]
    users = get_user_model().objects.filter(pk__in=made).order_by("pk")
    paginator = CappedPaginator(users, 5, cap=10)
    assert paginator.count_label == "10+"

    seen, number = [], 1
    while True:
        page = paginator.get_page(number)
        seen.extend(u.pk for u in page)
        if not page.has_next():
            break
        number = page.next_page_number()
    assert seen == made and number == 5
    assert paginator.get_page(1).of_label == "of 2+"
    assert paginator.get_page(4).of_label == "of 4+"
    # nonsense page numbers read as the first page
    assert [u.pk for u in paginator.get_page("abc")] == made[:5]
    assert [u.pk for u in paginator.get_page(-3)] == made[:5]


def test_capped_paginator_under_the_cap_is_an_ordinary_paginator():
    made = [factories.UserFactory().pk for _ in range(7)]
    users = get_user_model().objects.filter(pk__in=made).order_by("pk")
    paginator = CappedPaginator(users, 5)
    assert paginator.count_label == "7" and paginator.num_pages == 2
    assert paginator.get_page(99).number == 2  # past the end: the last page, as before
    assert paginator.get_page(2).of_label == "of 2"
