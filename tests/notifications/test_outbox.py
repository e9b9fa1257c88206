"""The email outbox (notifications.Email): every email is recorded before it is sent and sent
after the commit; a failed send is retried with backoff and given up, on the record, after
MAX_ATTEMPTS; two senders racing never send one email twice (real PostgreSQL, threads)."""

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from notifications.models import Email, Notification
from notifications.services import email_retry_delay, emails_send_due, notify
from notifications.tasks import send_due_emails
from tests import factories
from tests.notifications import backends

REFUSING = "tests.notifications.backends.RefusingBackend"
UNREACHABLE = "tests.notifications.backends.UnreachableBackend"


def _time_passes():
    """The retry's backoff is over (what the clock would do)."""
    Email.objects.filter(state="pending").update(next_attempt_at=timezone.now() - timedelta(1))


@pytest.mark.django_db
def test_an_email_is_recorded_then_sent_once(django_capture_on_commit_callbacks):
    # given
    person = factories.UserFactory(email="p@example.org")

    # when
    with django_capture_on_commit_callbacks(execute=True):
        notify(recipients=[person], kind="info", message="Your GPUs are ready.", link="/x/")

    # then: one recorded email, sent, with a Message-ID that names the row
    (email,) = Email.objects.all()
    assert (email.state, email.attempts, email.address) == ("sent", 1, "p@example.org")
    assert email.sent_at is not None and email.claimed_until is None
    (message,) = mail.outbox
    assert message.subject == email.subject == "[Allotment] Your GPUs are ready."
    assert message.extra_headers["Message-ID"].startswith(f"<allotment.email.{email.pk}.")
    # and nothing is sent again by the sweep
    assert send_due_emails() == 0 and len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_rolled_back_change_records_and_sends_nothing():
    person = factories.UserFactory(email="p@example.org")
    with pytest.raises(RuntimeError), django_transaction_atomic():
        notify(recipients=[person], kind="info", message="Never happened.")
        raise RuntimeError
    assert Email.objects.count() == 0 and mail.outbox == []


def django_transaction_atomic():
    from django.db import transaction

    return transaction.atomic()


@pytest.mark.django_db
def test_a_refused_send_is_kept_and_retried_after_a_backoff(
    settings, django_capture_on_commit_callbacks
):
    # given a mail server that refuses
    settings.EMAIL_BACKEND = REFUSING
    person = factories.UserFactory(email="p@example.org")

    # when
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        notify(recipients=[person], kind="info", message="Allocated.")

    # then: recorded, not sent, to be tried again after the first backoff
    (email,) = Email.objects.all()
    assert (email.state, email.attempts) == ("pending", 1)
    assert "SMTPRecipientsRefused" in email.last_error and "mailbox unavailable" in email.last_error
    assert email.next_attempt_at >= before + timedelta(seconds=60)
    # the notice itself is in the app whatever the mail server does
    assert Notification.objects.filter(recipient=person, message="Allocated.").exists()

    # when the sweep runs before the backoff is over: nothing is tried
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert send_due_emails() == 0 and mail.outbox == []

    # when the backoff is over and the server is back: sent once
    _time_passes()
    assert send_due_emails() == 1
    email.refresh_from_db()
    assert (email.state, email.attempts, email.last_error) == ("sent", 2, "")
    assert [m.to for m in mail.outbox] == [["p@example.org"]]
    _time_passes()
    assert send_due_emails() == 0 and len(mail.outbox) == 1


def test_the_backoff_doubles_up_to_its_cap(settings):
    settings.ALLOTMENT_EMAIL = {"RETRY_SECONDS": 60, "RETRY_MAX_SECONDS": 3600}
    delays = [email_retry_delay(n).total_seconds() for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


@pytest.mark.django_db
def test_an_unreachable_server_keeps_every_email_pending(settings):
    # given two recorded emails and no mail server
    settings.EMAIL_BACKEND = UNREACHABLE
    people = [factories.UserFactory(email=f"p{i}@example.org") for i in range(2)]
    for person in people:
        Email.objects.create(
            recipient=person,
            address=person.email,
            subject="s",
            body="b",
            next_attempt_at=timezone.now(),
        )

    # when
    assert emails_send_due() == 0

    # then
    states = set(Email.objects.values_list("state", "attempts"))
    assert states == {("pending", 1)}
    assert all(
        "SMTPServerDisconnected" in e for e in Email.objects.values_list("last_error", flat=True)
    )


@pytest.mark.django_db
def test_given_up_after_max_attempts_on_the_record_for_compute_ops(
    settings, client, ops, django_capture_on_commit_callbacks
):
    # given a mail server that refuses, and two attempts allowed
    settings.EMAIL_BACKEND = REFUSING
    settings.ALLOTMENT_EMAIL = {**settings.ALLOTMENT_EMAIL, "MAX_ATTEMPTS": 2}
    person = factories.UserFactory(email="gone@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        notify(recipients=[person], kind="info", message="Reclaim notice.")

    # when the retry fails too
    _time_passes()
    assert send_due_emails() == 0

    # then: failed for good, never tried again
    (email,) = Email.objects.all()
    assert (email.state, email.attempts) == ("failed", 2)
    _time_passes()
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert send_due_emails() == 0 and mail.outbox == []
    # in the audit trail
    (event,) = AuditEvent.objects.filter(action="email.given_up")
    assert event.object_id == email.pk and event.after["attempts"] == 2
    assert "SMTPRecipientsRefused" in event.after["last_error"]
    # counted by /readyz, which stays ready (a refused address is no reason to stop serving)
    readiness = client.get("/readyz").json()["checks"]["email_outbox"]
    assert readiness["failed"] == 1 and readiness["due"] == 0 and readiness["ok"] is True
    # and listed on the ops console
    client.force_login(ops)
    page = client.get("/ops/").content.decode()
    assert "Emails not delivered (1)" in page and "gone@example.org" in page


@pytest.mark.django_db
def test_the_ops_console_shows_no_email_section_when_all_went_out(client, ops):
    client.force_login(ops)
    assert "Emails not delivered" not in client.get("/ops/").content.decode()


@pytest.mark.django_db
def test_a_claim_that_lapsed_is_sent_again_and_a_late_answer_changes_nothing(settings):
    # given an email claimed by a sender that died mid-send (its claim lapsed)
    person = factories.UserFactory(email="p@example.org")
    email = Email.objects.create(
        recipient=person,
        address=person.email,
        subject="s",
        body="b",
        state="sending",
        attempts=1,
        next_attempt_at=timezone.now(),
        claimed_until=timezone.now() - timedelta(seconds=1),
    )

    # when the sweep runs
    assert send_due_emails() == 1

    # then it was sent under a new attempt
    email.refresh_from_db()
    assert (email.state, email.attempts) == ("sent", 2) and len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_live_claim_is_left_alone():
    person = factories.UserFactory(email="p@example.org")
    Email.objects.create(
        recipient=person,
        address=person.email,
        subject="s",
        body="b",
        state="sending",
        attempts=1,
        next_attempt_at=timezone.now() - timedelta(1),
        claimed_until=timezone.now() + timedelta(minutes=5),
    )
    assert send_due_emails() == 0 and mail.outbox == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("senders", [2, 4])
def test_senders_racing_on_the_same_emails_send_each_once(settings, senders):
    # given three recorded emails and a slow mail server (so the senders overlap)
    settings.EMAIL_BACKEND = "tests.notifications.backends.SlowBackend"
    backends.delivered.clear()
    people = [factories.UserFactory(email=f"p{i}@example.org") for i in range(3)]
    for person in people:
        Email.objects.create(
            recipient=person,
            address=person.email,
            subject=f"to {person.email}",
            body="b",
            next_attempt_at=timezone.now(),
        )
    start = threading.Barrier(senders)
    results: list[int] = []
    errors: list[BaseException] = []

    def sender():
        try:
            start.wait()
            results.append(emails_send_due())
        except BaseException as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    # when several workers send at the same instant, each on its own database connection
    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # then every email went out exactly once
    assert errors == []
    assert sorted(m.to[0] for m in backends.delivered) == sorted(p.email for p in people)
    assert sum(results) == 3
    assert set(Email.objects.values_list("state", "attempts")) == {("sent", 1)}


@pytest.mark.django_db
def test_readyz_is_not_ready_when_emails_pile_up_unsent(settings, client):
    from ops.health import heartbeat_record

    # given more due emails than the backlog allows
    heartbeat_record(name="beat")
    settings.ALLOTMENT_OPS = {**settings.ALLOTMENT_OPS, "EMAIL_BACKLOG_MAX": 1}
    person = factories.UserFactory(email="p@example.org")
    for _ in range(2):
        Email.objects.create(
            recipient=person,
            address=person.email,
            subject="s",
            body="b",
            next_attempt_at=timezone.now(),
        )

    # when
    response = client.get("/readyz")

    # then
    check = response.json()["checks"]["email_outbox"]
    assert response.status_code == 503 and check["ok"] is False and check["due"] == 2


@pytest.mark.django_db
def test_one_call_sends_every_due_email_a_small_round_at_a_time(monkeypatch, settings):
    # given more due emails than one claim round
    from notifications import services

    monkeypatch.setattr(services, "CLAIM_ROUND", 2)
    people = [factories.UserFactory(email=f"p{i}@example.org") for i in range(5)]
    for person in people:
        Email.objects.create(
            recipient=person,
            address=person.email,
            subject="s",
            body="b",
            next_attempt_at=timezone.now(),
        )

    # when
    sent = emails_send_due()

    # then all went out, each once, and the call ended
    assert sent == 5 and sorted(m.to[0] for m in mail.outbox) == sorted(p.email for p in people)
    assert set(Email.objects.values_list("state", "attempts")) == {("sent", 1)}
