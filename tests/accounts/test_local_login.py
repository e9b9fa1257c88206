"""ALLOTMENT_LOCAL_LOGIN (PRODUCT.md section 9): off hides and refuses every password sign-in;
API tokens keep working for scripts. And the start-up checks of the sign-in settings."""

import pytest
from django.core.checks import run_checks
from django.test import Client
from django.test.utils import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_off(oidc_settings):
    with override_settings(ALLOTMENT_LOCAL_LOGIN=False):
        yield


def test_the_password_form_is_hidden_and_refused(local_off, requester):
    # when the page is shown
    text = Client().get("/accounts/login/").content.decode()
    # then only the provider is offered
    assert "Sign in with Lab SSO" in text
    assert 'name="password"' not in text
    # and a password sent anyway is refused, with the reason, even the right one
    response = Client().post("/accounts/login/", {"username": "rita", "password": "pw"})
    assert response.status_code == 403
    assert "Passwords are turned off on this installation." in response.content.decode()
    assert "Sign in with Lab SSO instead." in response.content.decode()
    assert "_auth_user_id" not in response.client.session


def test_no_token_for_a_password_but_issued_tokens_keep_working(local_off, requester):
    token = Token.objects.create(user=requester)
    refused = APIClient().post(
        "/api/v1/auth/token/", {"username": "rita", "password": "pw"}, format="json"
    )
    assert refused.status_code == 400
    assert "token" not in refused.json()
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert script.get("/api/v1/teams/").status_code == 200


def test_passwords_work_by_default(requester):
    response = Client().post("/accounts/login/", {"username": "rita", "password": "pw"})
    assert response.status_code == 302 and response["Location"] == "/"


@pytest.mark.parametrize(
    "mapping, message",
    [
        ("not json", "Expecting value"),
        ('["a list"]', "must be a JSON object"),
        ('{"g": {"role": "division_lead"}}', "group 'g'"),
        ('{"g": {"role": "admin"}}', "group 'g'"),
        ('{"g": {"team": ""}}', "group 'g'"),
        ('{"g": {"team": "A", "role": "executive"}}', "group 'g'"),
    ],
)
def test_a_bad_group_mapping_stops_the_start(mapping, message):
    with override_settings(ALLOTMENT_OIDC_GROUPS=mapping):
        errors = [e for e in run_checks() if e.id == "accounts.E001"]
    assert len(errors) == 1
    assert message in errors[0].msg


def test_no_way_to_sign_in_stops_the_start():
    with override_settings(OIDC_ISSUER="", ALLOTMENT_LOCAL_LOGIN=False):
        assert "accounts.E003" in [e.id for e in run_checks()]
    with override_settings(OIDC_ISSUER="https://idp.example", OIDC_CLIENT_ID=""):
        assert "accounts.E002" in [e.id for e in run_checks()]
