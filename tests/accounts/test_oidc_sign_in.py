"""Sign-in through a real OIDC provider (PRODUCT.md section 9): the authorization code flow with
PKCE, users and grants from the provider's groups, and the tokens and answers that are refused."""

from __future__ import annotations

import html
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import override_settings

from accounts.backends import ProviderBackend
from accounts.models import OidcIdentity
from audit.models import AuditEvent
from org.models import Membership, RoleGrant
from tests import factories
from tests.support.oidc_provider import CLIENT_ID, new_private_key

from .conftest import SignIn

pytestmark = pytest.mark.django_db(transaction=False)
User = get_user_model()


@pytest.fixture
def lab(research, team):
    """Research with its Pretraining team, as the group mapping names them."""
    return {"research": research, "team": team}


def grants_of(user):
    teams = sorted(Membership.objects.filter(user=user).values_list("team__name", flat=True))
    roles = sorted(
        (role, division or "")
        for role, division in RoleGrant.objects.filter(user=user).values_list(
            "role", "division__name"
        )
    )
    return teams, roles


def signed_in_as(client) -> str | None:
    page = client.get("/")
    if page.status_code != 200:
        return None
    return page.context["user"].username


# --- the sign-in page -------------------------------------------------------------------------


def test_sign_in_page_offers_the_provider_beside_the_password_form(oidc_settings):
    page = Client().get("/accounts/login/")
    text = page.content.decode()
    assert "Sign in with Lab SSO" in text
    assert 'href="/accounts/oidc/login/"' in text
    assert 'name="password"' in text


def test_no_provider_link_without_an_issuer(db):
    with override_settings(OIDC_ISSUER=""):
        text = Client().get("/accounts/login/").content.decode()
        assert "Sign in with" not in text
        assert Client().get("/accounts/oidc/login/").status_code == 404
        assert Client().get("/accounts/oidc/callback/?code=x&state=y").status_code == 404


def test_the_authorization_request_uses_pkce_state_and_nonce(oidc_settings, idp):
    # when
    url = SignIn(idp).start()
    # then
    query = parse_qs(urlsplit(url).query)
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [CLIENT_ID]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43  # base64url of a SHA-256
    assert len(query["state"][0]) >= 32
    assert len(query["nonce"][0]) >= 32
    assert query["redirect_uri"] == ["http://testserver/accounts/oidc/callback/"]


# --- users and grants -------------------------------------------------------------------------


def test_first_sign_in_creates_the_user_with_mapped_teams_and_roles(oidc_settings, idp, lab):
    # given a person at the IdP in three mapped groups and one unmapped one
    idp.add_user("nora", groups=["pretraining", "research-leads", "execs", "coffee-club"])
    sign_in = SignIn(idp)
    # when
    response = sign_in.complete("nora")
    # then they land on the overview, signed in as a new user
    assert response.status_code == 302 and response["Location"] == "/"
    assert signed_in_as(sign_in.client) == "nora"
    nora = User.objects.get(username="nora")
    assert nora.email == "nora@lab.example"
    assert not nora.has_usable_password()
    assert OidcIdentity.objects.filter(user=nora, subject="sub-nora", issuer=idp.issuer).exists()
    assert grants_of(nora) == (
        ["Pretraining"],
        [("division_lead", "Research"), ("executive", "")],
    )
    # and the change is in the audit trail
    event = AuditEvent.objects.get(action="user.grants_sync", object_id=nora.pk)
    assert event.before == {"teams": [], "roles": []}
    assert event.after == {
        "teams": ["Pretraining"],
        "roles": ["division_lead of Research", "executive"],
    }


def test_a_group_removed_at_the_idp_removes_the_role_at_the_next_sign_in(oidc_settings, idp, lab):
    # given someone who signed in as a Research lead and compute ops
    idp.add_user("olga", groups=["research-leads", "compute-ops"])
    SignIn(idp).complete("olga")
    olga = User.objects.get(username="olga")
    assert grants_of(olga)[1] == [("compute_ops", ""), ("division_lead", "Research")]
    # when the IdP takes the leads group away and adds the team
    idp.set_groups("olga", ["compute-ops", "pretraining"])
    client = SignIn(idp)
    client.complete("olga")
    # then the role is gone, the new team is there
    assert grants_of(olga) == (["Pretraining"], [("compute_ops", "")])
    events = AuditEvent.objects.filter(action="user.grants_sync", object_id=olga.pk)
    assert events.count() == 2
    assert events.first().before["roles"] == ["compute_ops", "division_lead of Research"]
    assert events.first().after == {"teams": ["Pretraining"], "roles": ["compute_ops"]}
    # and the pages know it at once
    assert "division lead" not in client.client.get("/").content.decode()


def test_an_unchanged_sign_in_writes_no_audit_row(oidc_settings, idp, lab):
    idp.add_user("petra", groups=["pretraining"])
    SignIn(idp).complete("petra")
    SignIn(idp).complete("petra")
    petra = User.objects.get(username="petra")
    assert AuditEvent.objects.filter(action="user.grants_sync", object_id=petra.pk).count() == 1


def test_grants_given_by_hand_for_unmapped_teams_and_roles_stay(oidc_settings, idp, lab):
    # given a user who already holds an unmapped team by hand
    other = factories.TeamFactory(name="Evals", division=lab["research"])
    idp.add_user("quinn", groups=[])
    SignIn(idp).complete("quinn")
    quinn = User.objects.get(username="quinn")
    factories.MembershipFactory(team=other, user=quinn)
    # when they sign in again with no groups
    SignIn(idp).complete("quinn")
    # then the hand-made membership is untouched
    assert grants_of(quinn) == (["Evals"], [])


def test_an_existing_local_account_is_linked_but_never_an_admin(oidc_settings, idp, lab):
    local = factories.UserFactory(username="rosa")
    factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    idp.add_user("rosa")
    idp.add_user("root")
    SignIn(idp).complete("rosa")
    SignIn(idp).complete("root")
    assert OidcIdentity.objects.get(subject="sub-rosa").user == local
    linked = OidcIdentity.objects.get(subject="sub-root").user
    assert linked.username == "root-2"
    assert not linked.is_staff and not linked.is_superuser


def test_a_wrong_password_at_the_provider_signs_nobody_in(oidc_settings, idp, lab):
    idp.add_user("sara")
    sign_in = SignIn(idp)
    sign_in.start()
    page = sign_in.browser.get(sign_in.authorize_url, timeout=10)
    action = page.text.split('action="')[1].split('"')[0]
    answer = sign_in.browser.post(
        page.url.split("/interaction")[0] + action, data={"login": "sara", "password": "nope"}
    )
    assert "Wrong username or password." in answer.text
    assert not User.objects.filter(username="sara").exists()


# --- what is refused --------------------------------------------------------------------------


def _refused(response, client) -> None:
    """On the sign-in page with a message a person reads, and not signed in."""
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    page = client.get("/accounts/login/")
    assert "did not complete, and you are not signed in" in page.content.decode()
    assert signed_in_as(client) is None


def test_a_replayed_state_is_refused(oidc_settings, idp, lab):
    # given a completed sign-in
    idp.add_user("tina", groups=["execs"])
    sign_in = SignIn(idp)
    sign_in.start()
    callback = sign_in.at_provider("tina")
    assert sign_in.callback(callback)["Location"] == "/"
    # when the same answer (code and state) is sent again, from a fresh browser or the same
    for client in (Client(), sign_in.client):
        if client is sign_in.client:
            client.post("/accounts/logout/")
        response = SignIn(idp, client).callback(callback)
        # then
        _refused(response, client)


def test_a_state_from_another_browser_is_refused(oidc_settings, idp, lab):
    # given an attacker's sign-in answer, sent to a victim's browser that started its own
    idp.add_user("uma")
    attacker = SignIn(idp)
    attacker.start()
    stolen = attacker.at_provider("uma")
    victim = SignIn(idp)
    victim.start()
    # when
    response = victim.callback(stolen)
    # then
    _refused(response, victim.client)
    assert not User.objects.filter(username="uma").exists()


def test_an_id_token_with_another_nonce_is_refused(oidc_settings, idp, lab):
    # given a sign-in whose session expects another nonce than the ID token carries (a token
    # replayed into this sign-in)
    idp.add_user("vera")
    sign_in = SignIn(idp)
    sign_in.start()
    state = parse_qs(urlsplit(sign_in.authorize_url).query)["state"][0]
    session = sign_in.client.session
    session["oidc_states"][state]["nonce"] = "a-nonce-this-browser-never-sent"
    session.save()
    # when
    response = sign_in.callback(sign_in.at_provider("vera"))
    # then
    _refused(response, sign_in.client)
    assert not User.objects.filter(username="vera").exists()


def test_a_code_without_its_pkce_verifier_is_refused(oidc_settings, idp, lab):
    idp.add_user("wendy")
    sign_in = SignIn(idp)
    sign_in.start()
    state = parse_qs(urlsplit(sign_in.authorize_url).query)["state"][0]
    session = sign_in.client.session
    session["oidc_states"][state]["code_verifier"] = "x" * 64
    session.save()
    response = sign_in.callback(sign_in.at_provider("wendy"))
    _refused(response, sign_in.client)


def test_an_error_answer_from_the_provider_is_refused(oidc_settings, idp):
    sign_in = SignIn(idp)
    sign_in.start()
    state = parse_qs(urlsplit(sign_in.authorize_url).query)["state"][0]
    response = sign_in.client.get(
        "/accounts/oidc/callback/", {"error": "access_denied", "state": state}
    )
    _refused(response, sign_in.client)


# --- ID token checks, against the provider's real keys (JWKS) ---------------------------------


def _claims(idp, **overrides):
    now = int(time.time())
    claims = {
        "iss": idp.issuer,
        "sub": "sub-someone",
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def backend(oidc_settings):
    backend = ProviderBackend()
    backend._configure()
    return backend


def test_a_token_signed_with_the_providers_key_is_accepted(backend, idp):
    payload = backend.verify_token(idp.sign(_claims(idp)), nonce="n-1")
    assert payload["sub"] == "sub-someone"


@pytest.mark.parametrize(
    "case, claims",
    [
        ("expired", {"exp": int(time.time()) - 120, "iat": int(time.time()) - 600}),
        ("wrong audience", {"aud": "another-client"}),
        ("several audiences, not issued to us", {"aud": [CLIENT_ID, "other"], "azp": "other"}),
        ("wrong issuer", {"iss": "http://127.0.0.1:1/not-the-issuer"}),
        ("no expiry", {"exp": None}),
        ("other nonce", {"nonce": "n-2"}),
    ],
)
def test_a_bad_id_token_is_refused(backend, idp, case, claims):
    from django.core.exceptions import SuspiciousOperation

    token = idp.sign(_claims(idp, **claims))
    with pytest.raises(SuspiciousOperation):
        backend.verify_token(token, nonce="n-1")


def test_a_forged_token_is_refused(backend, idp):
    from django.core.exceptions import SuspiciousOperation

    # the provider's key id, someone else's key
    forged = idp.sign(_claims(idp), key=new_private_key())
    with pytest.raises(SuspiciousOperation, match="refused"):
        backend.verify_token(forged, nonce="n-1")
    # and an unsigned one
    import jwt

    unsigned = jwt.encode(_claims(idp), key=None, algorithm="none")
    with pytest.raises(SuspiciousOperation):
        backend.verify_token(unsigned, nonce="n-1")


# --- sign-out ---------------------------------------------------------------------------------


def test_sign_out_ends_the_provider_session(oidc_settings, idp, lab):
    # given someone signed in through the provider
    idp.add_user("xena")
    sign_in = SignIn(idp)
    sign_in.complete("xena")
    # when they sign out
    response = sign_in.client.post("/accounts/logout/")
    # then this session is over, and the page sends the browser on to the provider's
    # end_session_endpoint
    assert signed_in_as(sign_in.client) is None
    text = response.content.decode()
    assert "You are signed out of Allotment" in text
    assert "Now signing you out of Lab SSO too" in text
    url = html.unescape(re.search(r'content="0;url=([^"]+)"', text).group(1))
    assert html.unescape(re.search(r'href="([^"]+)">Continue to Lab SSO', text).group(1)) == url
    target = urlsplit(url)
    assert f"{target.scheme}://{target.netloc}" == idp.issuer
    query = parse_qs(target.query)
    assert query["post_logout_redirect_uri"] == ["http://testserver/accounts/login/"]
    assert query["client_id"] == [CLIENT_ID]
    assert "id_token_hint" in query
    # and the provider accepts it: its sign-out page asks to confirm
    page = sign_in.browser.get(url, timeout=10)
    assert "Sign out of the test identity provider?" in page.text


def test_sign_out_of_a_local_session_stays_here(db, requester):
    client = Client()
    client.force_login(requester)
    response = client.post("/accounts/logout/")
    assert response["Location"] == "/accounts/login/"
    assert signed_in_as(client) is None
