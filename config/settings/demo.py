"""Demo / development mode: what `python3 dev.py run` uses. Plain HTTP on localhost, email
into files under var/mail/, a fixed development secret. Never use in production."""

from .base import *  # noqa: F403
from .base import ALLOTMENT, ALLOTMENT_OPS, BASE_DIR, env
from .safety import refuse_debug_in_public

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="demo-only-not-secret-7c1f0a3e9b2d4e6f8a0b1c2d3e4f5a6b")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
SECURE_SSL_REDIRECT = False
SECURE_HSTS_SECONDS = 0
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# Emails go to files under var/mail/ (one per batch sent), not over the terminal's output.
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = env.path("EMAIL_FILE_PATH", default=BASE_DIR / "var" / "mail")
ALLOTMENT_SITE_URL = env("ALLOTMENT_SITE_URL", default="http://127.0.0.1:8000")
ALLOTMENT = {**ALLOTMENT, "DEMO": True}
# /metrics is open to this machine only (PRODUCT.md section 9).
ALLOTMENT_OPS = {
    **ALLOTMENT_OPS,
    "METRICS_ALLOWED_NETWORKS": env.list(
        "METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"]
    ),
}

refuse_debug_in_public(debug=DEBUG, allowed_hosts=ALLOWED_HOSTS)
