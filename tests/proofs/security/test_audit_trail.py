"""U1-U3 (PROOFS.md 2.6): one audit row per transition and none for a refused one; the trail is
append-only down to the database role; logs hold no secrets."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.contrib import admin
from django.db import DatabaseError, connection, transaction
from django.test import Client, RequestFactory

from audit.models import AuditEvent
from tests import factories
from tests.support import figures

from .conftest import count_5xx, valid_request_body

REQUEST_TYPE = "requests_app.computerequest"


def _rows(obj_id):
    return AuditEvent.objects.filter(object_type=REQUEST_TYPE, object_id=obj_id).count()


@pytest.fixture
def flow(api, requester, project, pool, division_lead, second_lead, executive, research):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=48)
    return {
        "rita": api(requester),
        "lead": api(division_lead),
        "lead2": api(second_lead),
        "exec": api(executive),
        "project": project,
        "pool": pool,
    }


def test_every_transition_writes_exactly_one_audit_row(flow):
    """U1: a script of transitions through the API, successful and refused; each success adds
    exactly one audit row on the request with actor, action, before/after and time; each refusal
    adds none."""
    body = valid_request_body(flow["project"], flow["pool"])
    mismatches = []
    transitions = 0

    def step(who, method, url_of, payload, rid, want_ok):
        nonlocal transitions
        before = _rows(rid) if rid else 0
        response = getattr(flow[who], method)(url_of(rid), payload, format="json")
        count_5xx(response)
        ok = 200 <= response.status_code < 300
        rid = rid or (response.json()["id"] if ok else None)
        added = _rows(rid) - before if rid else 0
        if ok != want_ok:
            mismatches.append(f"{who} {url_of(rid)}: {response.status_code}")
        if ok:
            transitions += 1
            if added != 1:
                mismatches.append(f"{url_of(rid)}: {added} audit rows for one transition")
        elif added:
            mismatches.append(f"{url_of(rid)}: refused but wrote {added} audit rows")
        return rid

    create = lambda _: "/api/v1/requests/"  # noqa: E731
    at = lambda suffix: lambda rid: f"/api/v1/requests/{rid}/{suffix}"  # noqa: E731
    # a request through both stages: create, edit, submit, division approve, executive approve
    urgent = step("rita", "post", create, {**body, "priority": "urgent"}, None, True)
    step("rita", "patch", at(""), {"gpus": 6}, urgent, True)
    step("rita", "post", at("submit/"), {}, urgent, True)
    step("exec", "post", at("approve/"), {}, urgent, False)  # stage skip refused
    step("lead", "post", at("approve/"), {}, urgent, True)
    step("lead", "post", at("approve/"), {}, urgent, False)  # wrong stage now
    step("exec", "post", at("approve/"), {}, urgent, True)
    step("exec", "post", at("approve/"), {}, urgent, False)  # decided already: 409
    step("rita", "post", at("withdraw/"), {}, urgent, False)  # too late
    # sent back, edited, resubmitted, rejected
    other = step("rita", "post", create, body, None, True)
    step("rita", "post", at("submit/"), {}, other, True)
    step("lead", "post", at("request-changes/"), {"comment": "smaller"}, other, True)
    step("rita", "patch", at(""), {"gpus": 2}, other, True)
    step("rita", "patch", at(""), {"gpus": -2}, other, False)  # bad input
    step("rita", "post", at("submit/"), {}, other, True)
    step("lead2", "post", at("reject/"), {"comment": "too big"}, other, True)
    step("lead", "post", at("reject/"), {"comment": "late"}, other, False)
    # withdrawn draft
    third = step("rita", "post", create, body, None, True)
    step("rita", "post", at("withdraw/"), {}, third, True)
    step("rita", "post", at("submit/"), {}, third, False)
    figures.add("audited transitions", transitions)
    figures.add("transitions without exactly one audit row", len(mismatches))
    assert not mismatches, mismatches
    # every row carries who, what, when and the states
    for event in AuditEvent.objects.filter(object_type=REQUEST_TYPE, object_id__in=[urgent, other]):
        assert event.actor_id and event.action and event.at and event.at.utcoffset() is not None
        if event.action not in ("request.create",):
            assert event.before or event.after, event.action


# --- U2: immutability ---


@pytest.fixture
def event(requester, project):
    from audit.services import audit_record

    return audit_record(actor=requester, action="test.event", obj=project, message="m")


def _refused(sql, params=None, role=None) -> bool:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if role:
                cursor.execute(f"SET LOCAL ROLE {role}")
            cursor.execute(sql, params or [])
    except DatabaseError:
        return True
    return False


@pytest.mark.parametrize("table", ["audit_auditevent", "allocator_ledgerentry"])
def test_the_app_role_may_only_insert_and_read_the_trail(event, table):
    # given the application's role (audit/migrations/0003)
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'allotment_app'")
        assert cursor.fetchone() == (False,), "NOLOGIN role allotment_app exists"
        cursor.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'allotment_app' AND table_name = %s",
            [table],
        )
        privileges = {row[0] for row in cursor.fetchall()}
    assert privileges == {"SELECT", "INSERT"}, privileges
    # when it tries to change the trail, then PostgreSQL refuses
    attempts = [
        f"UPDATE {table} SET id = id",
        f"DELETE FROM {table}",
        f"TRUNCATE {table}",
        f"TRUNCATE {table} CASCADE",
    ]
    succeeded = [sql for sql in attempts if not _refused(sql, role="allotment_app")]
    figures.add("audit tamper attempts", len(attempts))
    figures.add("audit tamper attempts that succeeded", len(succeeded))
    assert not succeeded
    # and it can still read it and do its normal work elsewhere
    assert not _refused(f"SELECT count(*) FROM {table}", role="allotment_app")
    assert not _refused(
        "UPDATE requests_app_computerequest SET updated_at = updated_at", role="allotment_app"
    )


def test_the_app_role_can_append_audit_rows(requester, project):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL ROLE allotment_app")
        from audit.services import audit_record

        audit_record(actor=requester, action="as.app", obj=project)
        cursor.execute("SELECT count(*) FROM audit_auditevent WHERE action = 'as.app'")
        assert cursor.fetchone() == (1,)


def test_even_the_owner_cannot_update_or_delete_rows(event):
    # the trigger of audit/migrations/0002 refuses everyone
    attempts = [
        ("UPDATE audit_auditevent SET message = 'x' WHERE id = %s", [event.pk]),
        ("DELETE FROM audit_auditevent WHERE id = %s", [event.pk]),
    ]
    succeeded = [sql for sql, params in attempts if not _refused(sql, params)]
    figures.add("audit tamper attempts", len(attempts))
    figures.add("audit tamper attempts that succeeded", len(succeeded))
    assert not succeeded


def test_the_orm_refuses_changes(event):
    tries = 0
    for attempt in (
        lambda: event.save(),
        lambda: event.delete(),
        lambda: AuditEvent.objects.filter(pk=event.pk).update(message="x"),
        lambda: AuditEvent.objects.filter(pk=event.pk).delete(),
    ):
        tries += 1
        with pytest.raises(PermissionError):
            attempt()
    figures.add("audit tamper attempts", tries)
    assert AuditEvent.objects.get(pk=event.pk).message == "m"


def test_the_admin_has_no_change_or_delete(event, admin_user):
    model_admin = admin.site._registry[AuditEvent]
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    assert not model_admin.has_change_permission(request, event)
    assert not model_admin.has_delete_permission(request, event)
    assert not model_admin.has_add_permission(request)
    client = Client()
    client.force_login(admin_user)
    response = client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"})
    assert response.status_code in (403, 302)
    response = client.post(
        "/admin/audit/auditevent/", {"action": "delete_selected", "_selected_action": [event.pk]}
    )
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    figures.add("audit tamper attempts", 2)


@pytest.mark.parametrize("method", ["put", "patch", "delete", "post"])
def test_the_audit_api_is_read_only(api, executive, event, method):
    client = api(executive)
    for url in ["/api/v1/audit/", f"/api/v1/audit/{event.pk}/"]:
        if method == "post" and url != "/api/v1/audit/":
            continue
        if method != "post" and url == "/api/v1/audit/":
            continue
        response = getattr(client, method)(url, {"message": "x"}, format="json")
        count_5xx(response)
        figures.add("audit tamper attempts")
        assert response.status_code == 405, (method, url, response.status_code)
    assert AuditEvent.objects.get(pk=event.pk).message == "m"


# --- U3: log hygiene ---


def test_logs_hold_no_secrets(caplog, capfd, requester, project, pool):
    # given a session of sign-ins, tokens and API calls with secrets the test knows
    password = "S3cret-Passw0rd!"
    requester.set_password(password)
    requester.save()
    caplog.set_level(logging.DEBUG)
    client = Client()
    client.post("/accounts/login/", {"username": requester.username, "password": "bad-" + password})
    client.post("/accounts/login/", {"username": requester.username, "password": password})
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    client.get("/")
    csrf = client.cookies.get(settings.CSRF_COOKIE_NAME)
    token = (
        Client()
        .post(
            "/api/v1/auth/token/",
            {"username": requester.username, "password": password},
            content_type="application/json",
        )
        .json()["token"]
    )
    api = Client(HTTP_AUTHORIZATION=f"Token {token}")
    api.get("/api/v1/requests/")
    api.post("/api/v1/requests/", {"gpus": "x\r\nFAKE LOG LINE"}, content_type="application/json")
    Client(HTTP_AUTHORIZATION="Token wrong-token-value").get("/api/v1/requests/")
    # then the captured logs contain none of them
    out, err = capfd.readouterr()
    text = "\n".join(r.getMessage() for r in caplog.records) + out + err
    secrets = [password, session_key, token, "wrong-token-value"]
    if csrf is not None:
        secrets.append(csrf.value)
    found = [s for s in secrets if s and s in text]
    figures.add("secrets found in logs", len(found))
    assert not found
    assert "\nFAKE LOG LINE" not in text
