"""Signing in through the lab's identity provider in a real browser: the provider's own login page
(tests/support/oidc/server.mjs, the npm package oidc-provider), back to Allotment with the teams
and roles the person's groups map to, and signing out of both."""

import json

import pytest
from django.core.cache import cache
from django.test.utils import override_settings
from playwright.sync_api import expect

from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider

pytestmark = pytest.mark.browser


@pytest.fixture
def idp_for_live_server(live_server, tmp_path, research, team):
    provider = OidcProvider(
        workdir=tmp_path,
        redirect_uris=[f"{live_server.url}/accounts/oidc/callback/"],
        post_logout_redirect_uris=[f"{live_server.url}/accounts/login/"],
    ).start()
    cache.delete(f"oidc-discovery:{provider.issuer}")
    groups = {
        "pretraining": {"team": "Pretraining"},
        "research-leads": {"role": "division_lead", "division": "Research"},
    }
    with override_settings(
        OIDC_ISSUER=provider.issuer,
        OIDC_CLIENT_ID=CLIENT_ID,
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        OIDC_PROVIDER_NAME="Lab SSO",
        OIDC_SCOPES="openid email profile groups",
        ALLOTMENT_OIDC_GROUPS=json.dumps(groups),
    ):
        yield provider
    provider.stop()


@pytest.mark.parametrize(
    "viewport", [{"width": 1280, "height": 860}, {"width": 375, "height": 740}]
)
def test_sign_in_through_the_providers_login_page_and_out_again(
    browse, idp_for_live_server, viewport
):
    idp = idp_for_live_server
    idp.add_user("nora", password="nora-at-the-idp", groups=["pretraining", "research-leads"])
    b = browse(viewport=viewport, label="nora")

    # when nora opens the sign-in page and picks the provider
    b.visit("/accounts/login/", "sign-in page")
    link = b.page.get_by_role("link", name="Sign in with Lab SSO")
    expect(link).to_be_visible()
    link.click()
    # then she is on the provider's own login page, which checks her password
    expect(
        b.page.get_by_role("heading", name="Sign in to the test identity provider")
    ).to_be_visible()
    assert b.page.url.startswith(idp.issuer)
    b.shot("provider login page")
    b.page.get_by_label("Username").fill("nora")
    b.page.get_by_label("Password").fill("wrong")
    b.page.get_by_role("button", name="Continue").click()
    expect(b.page.get_by_role("alert")).to_have_text("Wrong username or password.")
    b.page.get_by_label("Username").fill("nora")
    b.page.get_by_label("Password").fill("nora-at-the-idp")
    b.page.get_by_role("button", name="Continue").click()

    # then she lands on Allotment's overview, signed in, a division lead and a researcher
    b.page.wait_for_url(f"{b.base_url}/")
    who = b.page.locator(".who")
    expect(who).to_contain_text("nora")
    expect(who).to_contain_text("researcher")
    expect(who).to_contain_text("division lead")
    b.shot("landed")

    # when she signs out
    sign_out = b.page.get_by_role("button", name="Sign out")
    if not sign_out.is_visible():  # the phone layout folds the navigation away
        b.page.locator("label.nav-toggle-label").click()
    sign_out.click()
    # then the provider asks whether to end its session too, and returns her to the sign-in page
    yes = b.page.get_by_role("button", name="Yes, sign me out")
    expect(yes).to_be_visible()
    b.shot("provider sign-out")
    yes.click()
    b.page.wait_for_url(f"{b.base_url}/accounts/login/")
    expect(b.page.get_by_role("link", name="Sign in with Lab SSO")).to_be_visible()
    # and the provider no longer knows her: signing in asks for her password again
    b.page.get_by_role("link", name="Sign in with Lab SSO").click()
    expect(b.page.get_by_label("Password")).to_be_visible()
    assert b.errors() == []
