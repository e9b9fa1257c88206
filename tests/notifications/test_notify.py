"""notifications.services.notify: one INSERT whatever the number of recipients (the engine calls
it while it holds a pool's lock), dedupe keys, and one email with every recipient in blind copy,
sent only after the commit."""

import pytest
from django.core import mail

from notifications.models import Notification
from notifications.services import notify
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("n", [2, 20])
def test_one_insert_whatever_the_number_of_recipients(n, django_assert_num_queries):
    # given
    users = [factories.UserFactory(email=f"u{i}@example.org") for i in range(n)]

    # when
    with django_assert_num_queries(1):
        created = notify(
            recipients=[*users, users[0], None], kind="info", message="Hello", dedupe_key="k"
        )

    # then: each person once, the duplicate and the None skipped
    assert sorted(c.recipient.pk for c in created) == sorted(u.pk for u in users)
    rows = Notification.objects.filter(dedupe_key="k")
    assert sorted(rows.values_list("recipient_id", flat=True)) == sorted(u.pk for u in users)
    assert {c.pk for c in created} == set(rows.values_list("pk", flat=True))


def test_dedupe_key_tells_each_person_once():
    # given one person already told
    old, new = factories.UserFactory(), factories.UserFactory()
    notify(recipients=[old], kind="info", message="first", dedupe_key="change-1")

    # when both are told with the same key
    created = notify(recipients=[old, new], kind="info", message="second", dedupe_key="change-1")

    # then only the new one gets a notification, and the old one keeps the first message
    assert [c.recipient for c in created] == [new]
    assert Notification.objects.get(recipient=old).message == "first"
    assert Notification.objects.filter(dedupe_key="change-1").count() == 2


def test_without_a_key_every_call_notifies():
    user = factories.UserFactory()
    notify(recipients=[user], kind="info", message="a")
    notify(recipients=[user], kind="info", message="a")
    assert Notification.objects.filter(recipient=user).count() == 2


def test_long_messages_are_cut_in_the_app():
    user = factories.UserFactory()
    (created,) = notify(recipients=[user], kind="info", message="x" * 600)
    assert len(Notification.objects.get(pk=created.pk).message) == 500


def test_one_email_per_person_after_commit(django_capture_on_commit_callbacks):
    # given
    users = [factories.UserFactory(email=f"p{i}@example.org") for i in range(3)]
    silent = factories.UserFactory(email="")

    # when
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        notify(recipients=[*users, silent], kind="info", message="Allocated", link="/x/")

    # then nothing is sent before the commit; then one message to each person with an address,
    # each addressed to them alone
    assert mail.outbox == []
    for callback in callbacks:
        callback()
    assert sorted(m.to[0] for m in mail.outbox) == sorted(u.email for u in users)
    for message in mail.outbox:
        assert len(message.to) == 1 and message.bcc == [] and message.cc == []
        assert "Allocated" in message.subject and "/x/" in message.body


def test_no_email_when_asked_not_to(django_capture_on_commit_callbacks):
    user = factories.UserFactory(email="q@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        notify(recipients=[user], kind="info", message="quiet", email=False)
    assert mail.outbox == []
