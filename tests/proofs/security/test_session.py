"""A4 and A5 (PROOFS.md 2.5): CSRF on every unsafe session-authenticated route, the session
across sign-in and sign-out, brute-force lockout (django-axes) and the API throttle."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from django.test.utils import override_settings

from requests_app.workflow import Status
from tests import factories
from tests.support import figures

from .conftest import build_request, business_state, count_5xx, state_diff, valid_request_body


@pytest.fixture
def csrf_world(requester, project, pool, division_lead, second_lead, executive, ops, research):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    draft = build_request(
        Status.DRAFT, requester=requester, project=project, pool=pool, division_decider=second_lead
    )
    pending = build_request(
        Status.PENDING_DIVISION,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=second_lead,
    )
    failed = build_request(
        Status.FAILED, requester=requester, project=project, pool=pool, division_decider=second_lead
    )
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=8)
    return locals()


def routes(w):
    """Every unsafe route a signed-in browser can reach, with a user who may use it and a body
    that would succeed with a token."""
    d, p, a = w["draft"].pk, w["pending"].pk, w["allocation"].pk
    cap = {
        "pool": w["pool"].pk,
        "kind": "arrival",
        "delta": 8,
        "effective_at": "2030-01-01T00:00:00Z",
    }
    return [
        # API, session-authenticated
        ("requester", "post", "/api/v1/requests/", valid_request_body(w["project"], w["pool"])),
        ("requester", "patch", f"/api/v1/requests/{d}/", {"gpus": 4}),
        ("requester", "put", f"/api/v1/requests/{d}/", valid_request_body(w["project"], w["pool"])),
        ("requester", "post", f"/api/v1/requests/{d}/submit/", {}),
        ("requester", "post", f"/api/v1/requests/{p}/withdraw/", {}),
        ("division_lead", "post", f"/api/v1/requests/{p}/approve/", {}),
        ("division_lead", "post", f"/api/v1/requests/{p}/reject/", {}),
        ("division_lead", "post", f"/api/v1/requests/{p}/request-changes/", {}),
        ("requester", "post", f"/api/v1/allocations/{a}/release/", {}),
        ("ops", "post", f"/api/v1/allocations/{a}/reclaim/", {"new_gpus": 1, "reason": "r"}),
        ("ops", "post", "/api/v1/capacity-changes/", cap),
        (
            "executive",
            "post",
            f"/api/v1/divisions/{w['research'].pk}/share/",
            {"pool": w["pool"].pk, "gpus": 9},
        ),
        (
            "executive",
            "patch",
            f"/api/v1/divisions/{w['research'].pk}/share/",
            {"pool": w["pool"].pk, "gpus": 9},
        ),
        ("requester", "post", "/api/v1/projects/", {"name": "Nova", "team": w["project"].team_id}),
        ("requester", "post", "/api/v1/notifications/mark-read/", {}),
        # Pages
        ("requester", "post", "/requests/new/", {}),
        ("requester", "post", f"/requests/{d}/edit/", {}),
        ("requester", "post", f"/requests/{d}/submit/", {}),
        ("requester", "post", f"/requests/{p}/withdraw/", {}),
        ("division_lead", "post", f"/requests/{p}/decide/", {"action": "approve"}),
        ("ops", "post", "/ops/capacity/", {}),
        ("ops", "post", "/ops/move/", {}),
        ("ops", "post", f"/ops/changes/{w['failed'].change_id}/retry/", {}),
        ("requester", "post", f"/allocations/{a}/release/", {}),
        ("executive", "post", "/balance/", {}),
        ("requester", "post", "/notifications/read/", {}),
        ("requester", "post", "/accounts/logout/", {}),
        ("admin_user", "post", "/admin/logout/", {}),
        ("admin_user", "post", f"/admin/requests_app/computerequest/{d}/delete/", {"post": "yes"}),
    ]


def test_unsafe_routes_without_csrf_token_are_refused(csrf_world, admin_user):
    csrf_world["admin_user"] = admin_user
    bypasses = []
    for actor, method, url, body in routes(csrf_world):
        # given a signed-in browser that does not send the CSRF token
        client = Client(enforce_csrf_checks=True)
        client.force_login(csrf_world[actor])
        before = business_state()
        # when
        if url.startswith("/api/"):
            response = getattr(client, method)(url, body, content_type="application/json")
        else:
            response = getattr(client, method)(url, body)
        # then
        figures.add("unsafe routes tested for CSRF")
        count_5xx(response)
        changed = state_diff(before, business_state())
        if response.status_code != 403 or changed:
            bypasses.append(f"{method} {url}: {response.status_code} changed={changed}")
        if url.startswith("/api/") and response.status_code == 403:
            assert "CSRF" in response.json()["detail"]
    figures.add("CSRF bypasses", len(bypasses))
    assert not bypasses, bypasses


def test_with_the_token_the_same_routes_pass_the_csrf_check(csrf_world, admin_user):
    csrf_world["admin_user"] = admin_user
    for actor, method, url, body in routes(csrf_world):
        client = Client(enforce_csrf_checks=True)
        client.force_login(csrf_world[actor])
        client.get("/")  # sets the csrftoken cookie
        token = client.cookies[settings.CSRF_COOKIE_NAME].value
        if url.startswith("/api/"):
            response = getattr(client, method)(
                url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token
            )
        else:
            response = getattr(client, method)(url, {**body, "csrfmiddlewaretoken": token})
        count_5xx(response)
        detail = response.content.decode(errors="replace")
        assert not (response.status_code == 403 and "CSRF" in detail), (url, detail[:200])


def test_login_rotates_the_session_and_logout_kills_it(requester):
    # given an anonymous session with a key
    client = Client(enforce_csrf_checks=False)
    requester.set_password("correct horse")
    requester.save()
    client.get("/accounts/login/")
    session = client.session
    session["probe"] = 1
    session.save()
    anonymous_key = session.session_key
    # when signing in
    response = client.post(
        "/accounts/login/", {"username": requester.username, "password": "correct horse"}
    )
    assert response.status_code == 302
    signed_in_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    # then the key changed (no fixation)
    fixation = signed_in_key == anonymous_key
    figures.set("session fixation possible", fixation)
    assert not fixation
    assert client.get("/").status_code == 200
    # when signing out, the old cookie no longer works
    client.post("/accounts/logout/")
    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = signed_in_key
    response = replay.get("/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert replay.get("/api/v1/requests/").status_code in (401, 403)


def test_production_cookie_settings():
    from config.settings import base

    assert base.SESSION_COOKIE_SECURE and base.CSRF_COOKIE_SECURE
    assert base.SESSION_COOKIE_HTTPONLY
    assert base.SESSION_COOKIE_SAMESITE in ("Lax", "Strict")
    assert 0 < base.SESSION_COOKIE_AGE <= 24 * 3600


# --- A5: brute force ---


def _attempt(client, username, password):
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_sign_in_locks_after_the_failure_limit(requester):
    # given the right password, known to the attacker only after the limit
    requester.set_password("correct horse")
    requester.save()
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    # when the limit of wrong passwords is tried
    codes = [_attempt(client, requester.username, f"wrong{i}").status_code for i in range(limit)]
    # then the earlier ones show the form again, the last one the lockout
    assert codes[: limit - 1] == [200] * (limit - 1), codes
    assert codes[-1] == settings.AXES_HTTP_RESPONSE_CODE == 429
    figures.set("failed logins until lockout", codes.index(429) + 1)
    # even the right password is refused now, with a clear message
    locked = _attempt(client, requester.username, "correct horse")
    assert locked.status_code == 429
    assert "locked" in locked.content.decode().lower()
    assert "Content-Security-Policy" in locked
    # the lockout is by username and address: another user from the same address still signs in
    other = factories.UserFactory(username="someone")
    other.set_password("pw-other-1")
    other.save()
    assert _attempt(Client(), "someone", "pw-other-1").status_code == 302
    # and the API token endpoint honours it too
    cache.clear()  # the token endpoint's own rate limit is not what is tested here
    response = Client().post(
        "/api/v1/auth/token/",
        {"username": requester.username, "password": "correct horse"},
        content_type="application/json",
    )
    assert response.status_code in (403, 429), response.content
    figures.set("lockout honoured", True)


def test_lockout_lifts_after_the_cool_off(requester):
    requester.set_password("correct horse")
    requester.save()
    from datetime import timedelta

    with override_settings(AXES_COOLOFF_TIME=timedelta(seconds=1)):
        client = Client()
        for i in range(settings.AXES_FAILURE_LIMIT):
            _attempt(client, requester.username, f"wrong{i}")
        assert _attempt(client, requester.username, "correct horse").status_code == 429
        import time

        time.sleep(1.2)
        assert _attempt(client, requester.username, "correct horse").status_code == 302


def test_axes_backend_comes_first():
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert "axes.middleware.AxesMiddleware" in settings.MIDDLEWARE


# --- A5: API throttle on create and decide ---


@pytest.mark.parametrize("action", ["create", "approve"])
def test_a_burst_is_throttled_with_retry_after(api, csrf_world, action):
    cache.clear()
    client = api(csrf_world["requester" if action == "create" else "division_lead"])
    codes = []
    for _ in range(50):
        if action == "create":
            body = valid_request_body(csrf_world["project"], csrf_world["pool"], gpus="x")
            response = client.post("/api/v1/requests/", body, format="json")
        else:
            response = client.post(
                f"/api/v1/requests/{csrf_world['pending'].pk}/approve/",
                {"comment": "x" * 5000},
                format="json",
            )
        count_5xx(response)
        codes.append(response.status_code)
        if response.status_code == 429:
            assert int(response["Retry-After"]) > 0
            assert response.json()["detail"]
    figures.add("429s seen", codes.count(429))
    assert 429 in codes, codes
    assert all(code < 500 for code in codes)
