"""A real OIDC provider (tests/support/oidc_provider.py) for the whole package, and a helper that
walks a browser's sign-in through it: Django's test client on our side, an HTTP session with its
own cookies on the provider's side, its real login form in between."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from django.core.cache import cache
from django.test import Client
from django.test.utils import override_settings

from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider

APP = "http://testserver"
CALLBACK = f"{APP}/accounts/oidc/callback/"
GROUPS = {
    "pretraining": {"team": "Pretraining"},
    "research-leads": {"role": "division_lead", "division": "Research"},
    "execs": {"role": "executive"},
    "compute-ops": {"role": "compute_ops"},
}


@pytest.fixture(scope="session")
def idp(tmp_path_factory):
    provider = OidcProvider(
        workdir=tmp_path_factory.mktemp("oidc"),
        redirect_uris=[CALLBACK],
        post_logout_redirect_uris=[f"{APP}/accounts/login/"],
    ).start()
    yield provider
    provider.stop()


@pytest.fixture
def oidc_settings(idp):
    cache.delete(f"oidc-discovery:{idp.issuer}")
    with override_settings(
        OIDC_ISSUER=idp.issuer,
        OIDC_CLIENT_ID=CLIENT_ID,
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        OIDC_PROVIDER_NAME="Lab SSO",
        OIDC_SCOPES="openid email profile groups",
        ALLOTMENT_OIDC_GROUPS=json.dumps(GROUPS),
    ):
        yield


class SignIn:
    """One person's trip through the provider, step by step, so a test can stop or tamper."""

    def __init__(self, idp: OidcProvider, client: Client | None = None):
        self.idp = idp
        self.client = client or Client()
        self.browser = requests.Session()  # the provider's cookies, as a browser keeps them

    def start(self) -> str:
        response = self.client.get("/accounts/oidc/login/")
        assert response.status_code == 302, response
        self.authorize_url = response["Location"]
        assert self.authorize_url.startswith(self.idp.issuer)
        return self.authorize_url

    def at_provider(self, username: str, password: str = "idp-pass") -> str:
        """Log in on the provider's own page; return the callback URL it sends the browser to."""
        page = self.browser.get(self.authorize_url, timeout=10)
        assert "Sign in to the test identity provider" in page.text, page.text
        action = re.search(r'action="([^"]+)"', page.text).group(1)
        response = self.browser.post(
            urljoin(page.url, action),
            data={"login": username, "password": password},
            allow_redirects=False,
            timeout=10,
        )
        for _ in range(10):
            location = response.headers.get("Location", "")
            if location.startswith(APP):
                return location
            assert response.status_code in (302, 303), response.text
            response = self.browser.get(
                urljoin(response.url, location), allow_redirects=False, timeout=10
            )
        raise AssertionError("the provider never sent the browser back")

    def callback(self, url: str):
        parts = urlsplit(url)
        return self.client.get(parts.path, parse_qs(parts.query))

    def complete(self, username: str, password: str = "idp-pass"):
        self.start()
        return self.callback(self.at_provider(username, password))
