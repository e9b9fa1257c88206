"""Sign-in and sign-out pages: the local password form (unless ALLOTMENT_LOCAL_LOGIN is off) and
"Sign in with …" through the lab's identity provider (PRODUCT.md section 9)."""

from __future__ import annotations

import logging
from urllib.parse import urlencode, urlsplit

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import LoginView
from django.core.exceptions import SuspiciousOperation
from django.http import Http404
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.views.generic import View
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
    OIDCLogoutView,
)

from .backends import oidc_setting
from .oidc import ProviderUnavailable, oidc_enabled, provider_metadata, provider_name

security_log = logging.getLogger("security")


class SignInView(LoginView):
    """/accounts/login/: the password form beside "Sign in with …" whenever OIDC_ISSUER is set;
    with ALLOTMENT_LOCAL_LOGIN off the form is neither shown nor accepted."""

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(
            oidc_enabled=oidc_enabled(),
            oidc_provider_name=provider_name(),
            local_login=settings.ALLOTMENT_LOCAL_LOGIN,
        )
        return context

    def post(self, request, *args, **kwargs):
        if not settings.ALLOTMENT_LOCAL_LOGIN:
            security_log.warning(
                "password sign-in refused: ALLOTMENT_LOCAL_LOGIN is off (path=%s)", request.path
            )
            self.object = None
            context = self.get_context_data(form=self.get_form_class()(request))
            context["refusal"] = "Passwords are turned off on this installation." + (
                f" Sign in with {provider_name()} instead." if oidc_enabled() else ""
            )
            return self.render_to_response(context, status=403)
        return super().post(request, *args, **kwargs)


def _provider_failed(request, reason: str):
    security_log.warning("OIDC sign-in refused: %s", reason.replace("\n", " ")[:300])
    messages.error(
        request,
        f"Sign-in with {provider_name()} did not complete, and you are not signed in. "
        "Please try again; if it keeps failing, tell your administrator.",
    )
    return redirect("login")


class ProviderSignInStartView(OIDCAuthenticationRequestView):
    """Sends the browser to the provider with a fresh state, nonce and PKCE challenge."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, **kwargs):
        # The library reads the provider's endpoints when the view is built; we read them in
        # get(), so an unreachable provider is a message on the sign-in page, not an error page.
        View.__init__(self, **kwargs)

    def get(self, request):
        if not oidc_enabled():
            raise Http404("No identity provider is configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except ProviderUnavailable as exc:
            return _provider_failed(request, str(exc))
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID
        return super().get(request)


class ProviderCallbackView(OIDCAuthenticationCallbackView):
    """The redirect URI registered at the provider: /accounts/oidc/callback/. A replayed or
    unknown state, a token refused by the backend (signature, issuer, audience, expiry, nonce)
    or a provider error all end on the sign-in page with a message, signed out."""

    get_settings = staticmethod(oidc_setting)

    def get(self, request):
        if not oidc_enabled():
            raise Http404("No identity provider is configured.")
        try:
            return super().get(request)
        except (SuspiciousOperation, ProviderUnavailable, requests.RequestException) as exc:
            return _provider_failed(request, str(exc))

    def login_failure(self):
        reason = self.request.GET.get("error", "the provider's answer was not accepted")
        return _provider_failed(self.request, reason)


def provider_logout_url(request) -> str:
    """Where the browser goes after signing out here: the provider's end_session_endpoint (RP-
    Initiated Logout 1.0) when this session came from the provider and it has one, so the IdP
    session ends too; else the sign-in page."""
    local = resolve_url(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not (oidc_enabled() and id_token):
        return local
    try:
        endpoint = provider_metadata().get("end_session_endpoint")
    except ProviderUnavailable:
        return local
    if not endpoint:
        return local
    query = urlencode(
        {
            "id_token_hint": id_token,
            "client_id": settings.OIDC_CLIENT_ID,
            "post_logout_redirect_uri": request.build_absolute_uri(reverse("login")),
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


class SignOutView(OIDCLogoutView):
    """POST /accounts/logout/: ends this session, then the provider's where it supports it."""

    http_method_names = ["post"]
    get_settings = staticmethod(oidc_setting)

    def post(self, request):
        response = super().post(request)
        target = response["Location"]
        if not urlsplit(target).netloc:
            return response
        # Browsers hold a form's redirects to the submitting page's form-action policy ('self'),
        # so the way to the provider is a page that moves on by itself (meta refresh), with a link.
        return render(
            request,
            "registration/signed_out.html",
            {"provider_logout_url": target, "oidc_provider_name": provider_name()},
        )
