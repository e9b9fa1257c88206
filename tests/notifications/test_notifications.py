"""Notifications: the list page, marking read, the unread count in the header, and the API."""

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from notifications.models import Notification
from tests import factories

PAGE = "/notifications/"
MARK = "/notifications/read/"
API = "/api/v1/notifications/"


def note(user, message="Your request was approved", **kw):
    return Notification.objects.create(recipient=user, kind="decided", message=message, **kw)


@pytest.fixture
def notes(requester, outsider):
    mine = [note(requester, f"mine {i}") for i in range(3)]
    read = note(requester, "old", read_at=timezone.now())
    theirs = note(outsider, "theirs")
    return {"mine": mine, "read": read, "theirs": theirs}


def unread(user):
    return Notification.objects.filter(recipient=user, read_at__isnull=True).count()


# --- pages ---


def test_page_lists_only_mine_and_header_count(client, requester, notes):
    client.force_login(requester)
    response = client.get(PAGE)
    html = response.content.decode()
    assert response.status_code == 200
    assert "mine 0" in html and "old" in html
    assert "theirs" not in html
    assert '<span class="badge" id="unread-count">3</span>' in html


def test_page_unread_only(client, requester, notes):
    client.force_login(requester)
    html = client.get(PAGE, {"unread": "1"}).content.decode()
    assert "mine 0" in html and "old" not in html


def test_anonymous_redirected(client):
    assert client.get(PAGE).status_code == 302


def test_mark_one_read(client, requester, notes):
    client.force_login(requester)
    response = client.post(MARK, {"id": notes["mine"][0].pk}, follow=True)
    assert "Marked 1 notification read." in response.content.decode()
    assert unread(requester) == 2


def test_mark_all_read(client, requester, outsider, notes):
    client.force_login(requester)
    client.post(MARK)
    assert unread(requester) == 0
    assert unread(outsider) == 1


def test_cannot_mark_someone_elses(client, requester, outsider, notes):
    client.force_login(requester)
    response = client.post(MARK, {"id": notes["theirs"].pk}, follow=True)
    assert "Marked 0 notifications read." in response.content.decode()
    assert unread(outsider) == 1
    assert unread(requester) == 3


@pytest.mark.parametrize("bad", ["abc", "", "-1", "0", "9" * 30, "<script>"])
def test_bad_id_changes_nothing(client, requester, notes, bad):
    client.force_login(requester)
    response = client.post(MARK, {"id": bad}, follow=True)
    assert "That is not a notification." in response.content.decode()
    assert unread(requester) == 3


def test_mark_read_needs_post(client, requester, notes):
    client.force_login(requester)
    assert client.get(MARK).status_code == 405
    assert unread(requester) == 3


@pytest.mark.parametrize(
    ("link", "is_link"),
    [("/requests/1/", True), ("javascript:alert(1)", False), ("//evil.test/", False)],
)
def test_only_local_links(client, requester, link, is_link):
    note(requester, "click me", link=link)
    client.force_login(requester)
    html = client.get(PAGE).content.decode()
    assert (f'href="{link}"' in html) is is_link


def test_message_escaped(client, requester):
    note(requester, "<script>alert(1)</script>")
    client.force_login(requester)
    html = client.get(PAGE).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize("n", [3, 30])
def test_page_bounded_queries(client, requester, n, django_assert_num_queries):
    for i in range(n):
        note(requester, f"n{i}")
    client.force_login(requester)
    # session, user, roles (2), count, page, unread count
    with django_assert_num_queries(7):
        assert client.get(PAGE).status_code == 200


# --- API ---


@pytest.fixture
def api(requester):
    client = APIClient()
    client.force_authenticate(requester)
    return client


def test_api_lists_mine(api, notes):
    body = api.get(API).json()
    assert body["count"] == 4
    assert {n["message"] for n in body["results"]} == {"mine 0", "mine 1", "mine 2", "old"}
    assert api.get(API, {"unread": "true"}).json()["count"] == 3
    assert api.get(f"{API}{notes['theirs'].pk}/").status_code == 404
    assert api.get(f"{API}{notes['read'].pk}/").json()["read"] is True


def test_api_unread_count(api, notes):
    assert api.get(f"{API}unread-count/").json() == {"unread": 3}


def test_api_mark_some_read(api, requester, outsider, notes):
    ids = [notes["mine"][0].pk, notes["theirs"].pk]
    response = api.post(f"{API}mark-read/", {"ids": ids}, format="json")
    assert response.json() == {"marked": 1, "unread": 2}
    assert unread(outsider) == 1


def test_api_mark_all_read(api, requester, notes):
    assert api.post(f"{API}mark-read/", {}, format="json").json() == {"marked": 3, "unread": 0}


@pytest.mark.parametrize(
    "payload",
    [{"ids": "abc"}, {"ids": ["x"]}, {"ids": [-1]}, {"ids": [10**30]}, {"ids": [1] * 501}],
)
def test_api_mark_read_bad_input(api, requester, notes, payload):
    response = api.post(f"{API}mark-read/", payload, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "errors"}
    assert unread(requester) == 3


def test_api_anonymous_refused(notes):
    assert APIClient().get(API).status_code in (401, 403)


@pytest.mark.parametrize("n", [3, 30])
def test_api_bounded_queries(api, requester, n, django_assert_num_queries):
    for i in range(n):
        note(requester, f"n{i}")
    factories.UserFactory()  # noise
    with django_assert_num_queries(2):  # count, page
        assert api.get(API).status_code == 200
