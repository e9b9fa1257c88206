"""Demo / development mode: what `python3 dev.py run` uses. Plain HTTP on localhost, console
email, a fixed development secret. Never use in production."""

from .base import *  # noqa: F403
from .base import ALLOTMENT, ALLOTMENT_OPS, env
from .safety import refuse_debug_in_public

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="demo-only-not-secret-7c1f0a3e9b2d4e6f8a0b1c2d3e4f5a6b")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
SECURE_SSL_REDIRECT = False
SECURE_HSTS_SECONDS = 0
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
ALLOTMENT = {**ALLOTMENT, "DEMO": True}
# /metrics is open to this machine only (PRODUCT.md section 9).
ALLOTMENT_OPS = {
    **ALLOTMENT_OPS,
    "METRICS_ALLOWED_NETWORKS": env.list(
        "METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"]
    ),
}

refuse_debug_in_public(debug=DEBUG, allowed_hosts=ALLOWED_HOSTS)
