"""Benchmark settings (`python3 dev.py bench`, bench/): production-like request handling on the
real PostgreSQL and Redis, against the bench's own database and Redis database index.

- BENCH_DATABASE_NAME picks the database on the DATABASE_URL server (default `allotment_bench`);
  the bench's Celery workers get the same variable, so they work on the same data.
- BENCH_REDIS_URL is the broker, result store and cache (default: REDIS_URL's server, db 12), so a
  bench run never shares queues with the tests or the demo.
- DEBUG off (cached templates), persistent connections as in production, no eager Celery.
"""

import warnings

from .base import *  # noqa: F403
from .base import ALLOTMENT, DATABASES, LOGGING, REDIS_URL, env

DEBUG = False
SECRET_KEY = "bench-only-not-secret"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "bench.urls"  # config.urls plus the trivial baseline view
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ALLOTMENT_SITE_URL = env("ALLOTMENT_SITE_URL", default="http://127.0.0.1:8000")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

DATABASES["default"]["NAME"] = env("BENCH_DATABASE_NAME", default="allotment_bench")
DATABASES["default"]["CONN_MAX_AGE"] = 60  # as in production: no connect per request

BENCH_REDIS_URL = env("BENCH_REDIS_URL", default=REDIS_URL.rsplit("/", 1)[0] + "/12")
CELERY_BROKER_URL = BENCH_REDIS_URL
CELERY_RESULT_BACKEND = BENCH_REDIS_URL
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": BENCH_REDIS_URL,
        # One prefix per database: ids (and so the forecast's and summaries' keys) repeat across
        # the bench's databases, which share the Redis index.
        "KEY_PREFIX": "bench-" + DATABASES["default"]["NAME"],
    }
}
CELERY_TASK_ALWAYS_EAGER = False
ALLOTMENT = {**ALLOTMENT, "RESEND_AFTER_SECONDS": 30}

# collectstatic is not run for the bench; WhiteNoise's warning about it is noise.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")

LOGGING = {
    **LOGGING,
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="WARNING")},
    # A page that answers 404 or 500 is a row in the table, not a traceback in the output.
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.request": {"level": "CRITICAL"},
    },
}
