"""Test settings: the real PostgreSQL and Redis at DATABASE_URL / REDIS_URL (dev.py test starts
its own when none answers). Never SQLite, never eager Celery."""

import os

from .base import *  # noqa: F403
from .base import ALLOTMENT, ALLOTMENT_CONNECTORS, DATABASES, env

DEBUG = False
SECRET_KEY = "test-only-not-secret"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ALLOTMENT_SITE_URL = "http://testserver"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default="test_allotment")}

# Each pytest session gets its own Redis database index so parallel runs don't share queues.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
TEST_REDIS_URL = env("TEST_REDIS_URL", default=REDIS_URL.rsplit("/", 1)[0] + "/9")
CELERY_BROKER_URL = TEST_REDIS_URL
CELERY_RESULT_BACKEND = TEST_REDIS_URL
CACHES = {
    "default": {
        "BACKEND": "ops.cache.ResilientRedisCache",
        "LOCATION": TEST_REDIS_URL,
        "KEY_PREFIX": f"test-{os.getpid()}",
    }
}
CELERY_TASK_ALWAYS_EAGER = False
# Short limits so fault tests recover within seconds; still visibility > 2 x hard limit.
# A test may start a worker with smaller ones (TEST_CELERY_*: the pause proof F7).
CELERY_VISIBILITY_TIMEOUT = env.int("TEST_CELERY_VISIBILITY_TIMEOUT", default=20)
# kombu scans for unacked messages older than the visibility timeout every interval x throttle
# seconds (10 x 10 by default): scan every second, so redelivery follows the timeout closely.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_TASK_TIME_LIMIT = env.int("TEST_CELERY_TASK_TIME_LIMIT", default=8)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("TEST_CELERY_TASK_SOFT_TIME_LIMIT", default=6)
ALLOTMENT = {**ALLOTMENT, "RESEND_AFTER_SECONDS": 5}
ALLOTMENT_CONNECTORS = {**ALLOTMENT_CONNECTORS, "COMMAND_TIMEOUT_SECONDS": 5.0}

# A worker process started by a test must use the test database, not the configured one.
if env("ALLOTMENT_WORKER_DB", default=""):
    DATABASES["default"]["NAME"] = env("ALLOTMENT_WORKER_DB")

# Fault points on the apply path, armed by the proofs (allocator/faults.py). The system check
# allocator.E001 accepts this only in these settings; the armed faults live in a test-only app
# (its table exists only in test databases).
ALLOTMENT_TEST_SETTINGS = True
ALLOTMENT_FAULT_INJECTION = True
INSTALLED_APPS = [*INSTALLED_APPS, "tests.support.fault_injection"]  # noqa: F405
# Every response >= 500 counts into the figure "5xx responses" (must be 0 at the end).
MIDDLEWARE = ["tests.support.middleware.Count5xxMiddleware", *MIDDLEWARE]  # noqa: F405
