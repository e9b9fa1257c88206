"""notifications.services.notify: one INSERT whatever the number of recipients (the engine calls
it while it holds a pool's lock), dedupe keys, and the email outbox: one email per person after
the commit (a digest when several notices went out together), with whole subjects and links that
open from a mail client."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from notifications.checks import site_url_check
from notifications.models import Notification
from notifications.services import notifications_email_due, notify
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
        assert message.subject == "[Allotment] Allocated"
        assert "http://testserver/x/" in message.body.split()


def test_no_email_when_asked_not_to(django_capture_on_commit_callbacks):
    user = factories.UserFactory(email="q@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        notify(recipients=[user], kind="info", message="quiet", email=False)
    assert mail.outbox == []


def test_links_in_emails_are_absolute_from_the_site_url(
    settings, django_capture_on_commit_callbacks
):
    # given the site's address
    settings.ALLOTMENT_SITE_URL = "https://allotment.example.org/"
    user = factories.UserFactory(email="r@example.org")

    # when a notice with an app link is sent
    with django_capture_on_commit_callbacks(execute=True):
        (note,) = notify(recipients=[user], kind="info", message="Decided.", link="/requests/7/")

    # then the email links to the page on the site; the app keeps its own path
    (message,) = mail.outbox
    assert message.body.splitlines()[-1] == "https://allotment.example.org/requests/7/"
    assert Notification.objects.get(pk=note.pk).link == "/requests/7/"


def test_subjects_are_whole_or_shortened_at_a_word(django_capture_on_commit_callbacks):
    # given two notices: one whose first sentence fits, one far too long for a subject
    fits = "Request #12 (24 GPUs of east/H100 for Atlas) waits for your executive review."
    long = "rlead approved the division review of your request #4 " + "carefully " * 12 + "now."
    a, b = (
        factories.UserFactory(email="a@example.org"),
        factories.UserFactory(email="b@example.org"),
    )

    # when
    with django_capture_on_commit_callbacks(execute=True):
        notify(recipients=[a], kind="info", message=fits + " Reason: large.")
        notify(recipients=[b], kind="info", message=long)

    # then the first is the whole sentence; the second ends with an ellipsis after a whole word
    subjects = {m.to[0]: m.subject for m in mail.outbox}
    assert subjects["a@example.org"] == "[Allotment] " + fits
    cut = subjects["b@example.org"]
    assert cut.endswith("carefully…") and len(cut) <= 110
    assert long.startswith(cut.removeprefix("[Allotment] ").removesuffix("…"))


def test_one_digest_per_person_for_notices_sent_together(django_capture_on_commit_callbacks):
    # given two people, one told three things and one told one thing in the same transaction
    many, one = (
        factories.UserFactory(email="m@example.org"),
        factories.UserFactory(email="o@example.org"),
    )

    # when
    with django_capture_on_commit_callbacks(execute=True):
        notify(recipients=[many, one], kind="allocated", message="Atlas got 8 GPUs.", link="/p/1/")
        notify(recipients=[many], kind="allocated", message="Orion got 16 GPUs.", link="/p/2/")
        notify(recipients=[many], kind="waiting", message="Vega waits.", link="/p/3/")

    # then each gets one email; the digest lists the three notices with their links
    by_person = {m.to[0]: m for m in mail.outbox}
    assert sorted(by_person) == ["m@example.org", "o@example.org"] and len(mail.outbox) == 2
    digest = by_person["m@example.org"]
    assert digest.subject == "[Allotment] 3 notices: Atlas got 8 GPUs."
    for line in ["1. Atlas got 8 GPUs.", "2. Orion got 16 GPUs.", "3. Vega waits."]:
        assert line in digest.body
    assert "http://testserver/p/3/" in digest.body
    assert by_person["o@example.org"].subject == "[Allotment] Atlas got 8 GPUs."
    # and nothing is due any more: a second send finds nothing
    assert notifications_email_due() == 0 and len(mail.outbox) == 2


def test_the_sweep_sends_what_the_after_commit_call_never_sent(django_capture_on_commit_callbacks):
    # given a notice committed whose after-commit send was lost (the process died)
    user = factories.UserFactory(email="s@example.org")
    with django_capture_on_commit_callbacks(execute=False):
        notify(recipients=[user], kind="info", message="Lost.", link="/x/")
    Notification.objects.update(created_at=timezone.now() - timedelta(minutes=5))

    # when the periodic sweep runs
    sent = notifications_email_due(older_than=timedelta(minutes=2))

    # then it is sent once
    assert sent == 1 and [m.subject for m in mail.outbox] == ["[Allotment] Lost."]
    assert notifications_email_due(older_than=timedelta(minutes=2)) == 0


@pytest.mark.parametrize("value", ["", "example.org", "/relative/", "ftp://example.org"])
def test_a_missing_or_bad_site_url_is_a_startup_error(settings, value):
    settings.ALLOTMENT_SITE_URL = value
    (error,) = site_url_check(None)
    assert error.id == "notifications.E001" and "ALLOTMENT_SITE_URL" in error.msg


def test_a_good_site_url_passes(settings):
    settings.ALLOTMENT_SITE_URL = "https://allotment.example.org"
    assert site_url_check(None) == []
