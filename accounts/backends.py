"""Authentication backends: local passwords (which ALLOTMENT_LOCAL_LOGIN can turn off) and the
lab's identity provider through mozilla-django-oidc (authorization code flow, PKCE, state and
nonce), with its endpoints read from the provider's discovery document."""

from __future__ import annotations

import jwt
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings

from .oidc import ProviderUnavailable, oidc_enabled, provider_metadata
from .services import ClaimsRefused, oidc_user_sync

# Clock difference tolerated between this server and the provider when checking exp and iat.
CLOCK_SKEW_SECONDS = 30

_FROM_DISCOVERY = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
# mozilla-django-oidc's names for what PRODUCT.md section 9 spells differently.
_ALIASES = {
    "OIDC_RP_CLIENT_ID": "OIDC_CLIENT_ID",
    "OIDC_RP_CLIENT_SECRET": "OIDC_CLIENT_SECRET",
    "OIDC_RP_SCOPES": "OIDC_SCOPES",
    "OIDC_RP_SIGN_ALGO": "OIDC_SIGN_ALGO",
}
# Not configurable: the flow is always code + PKCE (S256) + nonce, with the ID token kept in the
# session for the provider's sign-out (id_token_hint).
_FIXED = {
    "OIDC_USE_PKCE": True,
    "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
    "OIDC_USE_NONCE": True,
    "OIDC_STORE_ID_TOKEN": True,
    "OIDC_ALLOW_UNSECURED_JWT": False,
    "OIDC_TIMEOUT": 10,
    "OIDC_AUTHENTICATION_CALLBACK_URL": "oidc_authentication_callback",
    "OIDC_OP_LOGOUT_URL_METHOD": "accounts.views.provider_logout_url",
}


def oidc_setting(attr: str, *default):
    """mozilla-django-oidc's settings, taken from section 9's environment and discovery."""
    if attr in _FIXED:
        return _FIXED[attr]
    if attr in _FROM_DISCOVERY:
        return provider_metadata().get(_FROM_DISCOVERY[attr], *default)
    if attr in _ALIASES:
        return getattr(settings, _ALIASES[attr])
    return import_from_settings(attr, *default)


class LocalPasswordBackend(ModelBackend):
    """Django's username + password check, refused for everyone while ALLOTMENT_LOCAL_LOGIN is
    off: the sign-in form, the Django admin and POST /api/v1/auth/token/ alike. API tokens
    already issued keep working (they are not passwords)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not settings.ALLOTMENT_LOCAL_LOGIN:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class ProviderBackend(OIDCAuthenticationBackend):
    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args, **kwargs):
        # Django builds every backend for every authenticate() call, the password form's too:
        # read the provider's settings (and discovery) only once a provider's answer arrives.
        self.UserModel = None

    def _configure(self):
        from django.contrib.auth import get_user_model

        self.OIDC_OP_TOKEN_ENDPOINT = oidc_setting("OIDC_OP_TOKEN_ENDPOINT")
        self.OIDC_OP_USER_ENDPOINT = oidc_setting("OIDC_OP_USER_ENDPOINT", None)
        self.OIDC_OP_JWKS_ENDPOINT = oidc_setting("OIDC_OP_JWKS_ENDPOINT")
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs):
        if request is None or "nonce" not in kwargs or not oidc_enabled():
            return None  # not a provider callback: the password form, a token request
        try:
            self._configure()
        except ProviderUnavailable as exc:
            raise SuspiciousOperation(f"identity provider unavailable: {exc}") from exc
        return super().authenticate(request, **kwargs)

    def verify_token(self, token, **kwargs):
        # A token without a key id or an algorithm makes the library's key lookup raise
        # KeyError: that is a refused token, not a server error.
        try:
            return super().verify_token(token, **kwargs)
        except (KeyError, TypeError, ValueError, jwt.PyJWTError) as exc:
            raise SuspiciousOperation(f"ID token refused: malformed ({exc!r})") from exc

    def _verify_jws(self, payload, key):
        """The ID token's signature (the provider's key, its algorithm only), and the claims the
        library leaves unchecked: issuer, audience (this client), expiry and issue time."""
        try:
            header = jwt.get_unverified_header(payload)
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"ID token unreadable: {exc}") from exc
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"ID token signed with {header.get('alg')!r}")
        try:
            claims = jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from exc
        # A token for several audiences must name us as the party it was issued to (OIDC
        # Core 3.1.3.7, items 4 and 5).
        several = isinstance(claims.get("aud"), list) and len(claims["aud"]) > 1
        if several and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SuspiciousOperation("ID token issued to another party (azp)")
        return claims

    def get_or_create_user(self, access_token, id_token, payload):
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            userinfo = self.get_userinfo(access_token, id_token, payload)
            # OIDC Core 5.3.2: userinfo about anyone but the ID token's subject is not used.
            if userinfo.get("sub") != payload.get("sub"):
                raise SuspiciousOperation("userinfo describes another subject")
            claims.update(userinfo)
        try:
            return oidc_user_sync(issuer=settings.OIDC_ISSUER, claims=claims)
        except ClaimsRefused as exc:
            raise SuspiciousOperation(str(exc)) from exc

    def get_user(self, user_id):
        from django.contrib.auth import get_user_model

        return get_user_model().objects.filter(pk=user_id).first()
