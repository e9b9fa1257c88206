"""Settings for every environment. Values come from the environment; the defaults are the safe
production ones (DEBUG off, secure cookies). `demo.py` and `test.py` override what they need."""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF

from config.logging import configure as configure_logging
from config.settings.safety import refuse_debug_in_public

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# Required in production: Django refuses to start with an empty SECRET_KEY.
SECRET_KEY = env("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "mozilla_django_oidc",
    "common",
    "org",
    "audit",
    "notifications",
    "allocator",
    "allocator.connectors",
    "requests_app",
    "front",
    "devtools",
    "accounts",
    "ops",
    "django_structlog",
]

MIDDLEWARE = [
    # First: they see every answer, including those other middleware make.
    "ops.middleware.RequestMetricsMiddleware",
    "django_structlog.middlewares.RequestMiddleware",
    "ops.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "common.middleware.BodySizeLimitMiddleware",
    "common.security.SecurityLogMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "org.context_processors.roles",
                "notifications.context_processors.unread",
                "front.context_processors.nav_section",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/allotment")
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A session stalled inside a transaction (a paused worker holding the pool lock, PROOFS.md F7) is
# ended by PostgreSQL after this long, which releases its locks.
DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
    f"-c idle_in_transaction_session_timeout={env.int('DB_IDLE_IN_TX_TIMEOUT_MS', default=60000)}"
)
# The app's own database role (audit/migrations/0003): only INSERT/SELECT on the audit trail and
# the ledger. Set DATABASE_ROLE=allotment_app where the login role is a member of it.
if env("DATABASE_ROLE", default=""):
    DATABASES["default"].setdefault("OPTIONS", {})["assume_role"] = env("DATABASE_ROLE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Brute-force protection (django-axes): five wrong passwords for one username from one address
# lock that pair out for a while; the sign-in page says so (429). AxesStandaloneBackend must come
# first so it sees every attempt.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "accounts.backends.LocalPasswordBackend",
    "accounts.backends.ProviderBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
LOGIN_URL = "login"
# --- Sign-in through the lab's identity provider (PRODUCT.md section 9, README "Single sign-on").
# OIDC is on exactly when OIDC_ISSUER is set; discovery at OIDC_ISSUER/.well-known/openid-configuration.
OIDC_ISSUER = env("OIDC_ISSUER", default="")
OIDC_CLIENT_ID = env("OIDC_CLIENT_ID", default="")
OIDC_CLIENT_SECRET = env("OIDC_CLIENT_SECRET", default="")
OIDC_PROVIDER_NAME = env("OIDC_PROVIDER_NAME", default="single sign-on")
OIDC_GROUPS_CLAIM = env("OIDC_GROUPS_CLAIM", default="groups")
# Many providers send groups only when asked for them: add `groups` (Okta, oidc-provider) here.
OIDC_SCOPES = env("OIDC_SCOPES", default="openid email profile")
OIDC_SIGN_ALGO = env("OIDC_SIGN_ALGO", default="RS256")
# JSON: IdP group -> {"team": name} | {"role": "division_lead", "division": name}
#                    | {"role": "executive"} | {"role": "compute_ops"}. Checked at start-up.
ALLOTMENT_OIDC_GROUPS = env("ALLOTMENT_OIDC_GROUPS", default="{}")
# Off: no password form, no password accepted anywhere (the form, the admin, the token
# endpoint); API tokens already issued keep working.
ALLOTMENT_LOCAL_LOGIN = env.bool("ALLOTMENT_LOCAL_LOGIN", default=True)
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "var" / "static")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Security: production defaults; demo.py relaxes what plain-HTTP localhost needs. ---
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 60 * 60 * 12
X_FRAME_OPTIONS = "DENY"
# Every script and stylesheet comes from the app itself; no inline code anywhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Email: console in demo, SMTP from EMAIL_URL in production. ---
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="smtp://localhost:25")
vars().update(EMAIL_CONFIG)
# Seconds before an SMTP call is given up: well below the outbox claim (ALLOTMENT_EMAIL).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="allotment@localhost")
# Where people open Allotment; emails link there. Required in production (notifications.E001).
ALLOTMENT_SITE_URL = env("ALLOTMENT_SITE_URL", default="")
# The email outbox (notifications.Email): a failed send is retried after RETRY_SECONDS,
# doubling up to RETRY_MAX_SECONDS, and given up (failed, audited, on /readyz and the ops
# console) after MAX_ATTEMPTS; a sender's claim on an email lapses after CLAIM_SECONDS.
ALLOTMENT_EMAIL = {
    "MAX_ATTEMPTS": env.int("ALLOTMENT_EMAIL_MAX_ATTEMPTS", default=6),
    "RETRY_SECONDS": env.int("ALLOTMENT_EMAIL_RETRY_SECONDS", default=60),
    "RETRY_MAX_SECONDS": env.int("ALLOTMENT_EMAIL_RETRY_MAX_SECONDS", default=3600),
    "CLAIM_SECONDS": env.int("ALLOTMENT_EMAIL_CLAIM_SECONDS", default=600),
}

# --- Redis: Celery broker, result store and cache share one server. ---
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "ops.cache.ResilientRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="allotment"),
    }
}
if env("CACHE_URL", default="").startswith("locmemcache://"):  # no Redis on this platform
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery (PRODUCT.md section 4). The apply task is idempotent, so at-least-once delivery is
# what we want: ack only after the task ran, requeue when a worker dies, take one message at a
# time. Hard time limits stay far below the visibility timeout, else Redis redelivers a task
# that is still running (Read the Docs hit this at 1 h).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_VISIBILITY_TIMEOUT_CHECK = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = timedelta(days=1)
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE_FILENAME = env(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(BASE_DIR / "var" / "celerybeat-schedule")
)
CELERY_BEAT_SCHEDULE = {
    "expire-allocations": {"task": "allocator.tasks.expire_allocations", "schedule": 60.0},
    "activate-capacity-changes": {"task": "allocator.tasks.serve_all_queues", "schedule": 60.0},
    "apply-due-reclaims": {"task": "allocator.tasks.apply_due_reclaims", "schedule": 60.0},
    "resend-stuck-approvals": {"task": "allocator.tasks.resend_stuck_changes", "schedule": 30.0},
    # Stored forecasts made stale by time or by a write no worker refreshed (forecast/stored.py).
    "refresh-stale-forecasts": {
        "task": "allocator.tasks.refresh_stale_forecasts",
        "schedule": 60.0,
    },
    # Scheduler connectors (allocator/connectors): due enforcement intents, and the reconciler.
    "connectors-dispatch-due-intents": {
        "task": "connectors.tasks.dispatch_due_intents",
        "schedule": 10.0,
    },
    "connectors-reconcile": {"task": "connectors.tasks.reconcile_all", "schedule": 60.0},
    "connectors-collect-usage": {"task": "connectors.tasks.collect_usage", "schedule": 600.0},
    "send-due-emails": {"task": "notifications.tasks.send_due_emails", "schedule": 60.0},
    # Proves beat sends and a worker runs what it sends (/readyz, ops/health.py).
    "beat-heartbeat": {"task": "ops.tasks.beat_heartbeat", "schedule": 15.0},
    # Links new audit rows into the hash chain (ops/ledger.py).
    "audit-chain-link": {"task": "ops.tasks.audit_chain_link", "schedule": 5.0},
    "ending-soon-reminders": {
        "task": "allocator.tasks.send_ending_reminders",
        "schedule": crontab(minute=0),
    },
    # Approval SLAs (requests_app/sla.py): reminders and escalations, and the deciders' digest.
    "approvals-sla-sweep": {"task": "requests_app.tasks.approvals_sla_sweep", "schedule": 300.0},
    "approvals-digest": {
        "task": "requests_app.tasks.approvals_digest",
        "schedule": crontab(minute=0, hour=env.int("ALLOTMENT_DIGEST_HOUR", default=8)),
    },
}

# --- DRF / OpenAPI ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "common.pagination.CursorPagination",
    # JSON nested deeper than a sane depth answers 400 (common/inputs.py); forms as DRF's.
    "DEFAULT_PARSER_CLASSES": [
        "common.inputs.DepthLimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        # Unknown or unreadable query parameters answer 400 naming them (common/filters.py).
        "common.filters.StrictFilterBackend",
        "rest_framework.filters.SearchFilter",
        "common.filters.StrictOrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "DATETIME_FORMAT": "iso-8601",
}
# Per user, on the API calls that file or decide something (common.api.WriteThrottle).
API_WRITE_RATE = env("API_WRITE_RATE", default="30/min")
SPECTACULAR_SETTINGS = {
    "TITLE": "Allotment API",
    "DESCRIPTION": "Compute requests, approvals, GPU pools and allocations.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from the app's own static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `kind` with different choices: name each enum explicitly.
    "ENUM_NAME_OVERRIDES": {
        "RequestKindEnum": "requests_app.models.ComputeRequest.Kind",
        "CapacityChangeKindEnum": "allocator.models.CapacityChange.Kind",
        "RoleGrantRoleEnum": "org.models.RoleGrant.Role",
        "DelegationRoleEnum": "accounts.models.Delegation.Role",
    },
    # Every endpoint's error answers (400/403/404/409/413/415/422/429), see common/schema.py.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.schema.document_error_responses",
    ],
}

# --- Product settings (PRODUCT.md sections 3 and 4) ---
# Test-only fault points on the apply path (allocator/faults.py); allocator.E001 refuses it here.
ALLOTMENT_FAULT_INJECTION = False
ALLOTMENT = {
    "LARGE_REQUEST_GPUS": env.int("ALLOTMENT_LARGE_REQUEST_GPUS", default=256),
    "HORIZON_DAYS": env.int("ALLOTMENT_HORIZON_DAYS", default=90),
    "RECLAIM_NOTICE_HOURS": env.int("ALLOTMENT_RECLAIM_NOTICE_HOURS", default=72),
    # An approved change that no worker took within this many seconds is sent again.
    "RESEND_AFTER_SECONDS": env.int("ALLOTMENT_RESEND_AFTER_SECONDS", default=120),
    # A change whose apply crashed this many times is marked failed for compute ops.
    "MAX_APPLY_ATTEMPTS": env.int("ALLOTMENT_MAX_APPLY_ATTEMPTS", default=3),
    # A worker applies up to this many of a pool's pending first attempts in one transaction
    # (allocator/services/engine.py); 1 applies one change at a time.
    "APPLY_BATCH_SIZE": env.int("ALLOTMENT_APPLY_BATCH_SIZE", default=50),
    "ENDING_REMINDER_DAYS": (7, 1),
    # Due time of each approval stage per priority: "<n>h" clock hours, "<n>d" working days
    # (Mon-Fri). JSON in ALLOTMENT_APPROVAL_SLA overrides, e.g. {"division": {"normal": "2d"}}.
    "APPROVAL_SLA": env.json("ALLOTMENT_APPROVAL_SLA", default={}),
    "DEMO": False,
}

# Scheduler connectors (PRODUCT.md section 9, allocator/connectors).
ALLOTMENT_CONNECTORS = {
    # Each Slurm command gives up after this; the intent stays pending and is retried.
    "COMMAND_TIMEOUT_SECONDS": env.float("ALLOTMENT_CONNECTOR_COMMAND_TIMEOUT", default=20.0),
    "MAX_BACKOFF_SECONDS": env.int("ALLOTMENT_CONNECTOR_MAX_BACKOFF", default=300),
    # Jobs running above a lowered limit are requeued after this many minutes; None: never
    # (they are reported to owners and compute ops, and finish on their own).
    # (empty: never, so the recipes can set the variable to "").
    "REQUEUE_OVER_LIMIT_AFTER_MINUTES": (
        int(_requeue)
        if (_requeue := env("ALLOTMENT_REQUEUE_OVER_LIMIT_AFTER_MINUTES", default=""))
        else None
    ),
    # An allocation whose jobs used less than this share of its GPU-hours over IDLE_HOURS is
    # flagged idle.
    "IDLE_HOURS": env.int("ALLOTMENT_IDLE_HOURS", default=24),
    "IDLE_USE_BELOW": env.float("ALLOTMENT_IDLE_USE_BELOW", default=0.1),
}


# --- Operations (ops/, docs/deploy.md) ---
ALLOTMENT_OPS = {
    # /metrics answers these networks (REMOTE_ADDR) and requests carrying
    # "Authorization: Bearer <METRICS_TOKEN>"; nobody else.
    "METRICS_ALLOWED_NETWORKS": env.list("METRICS_ALLOWED_NETWORKS", default=[]),
    "METRICS_TOKEN": env("METRICS_TOKEN", default=""),
    # /readyz: beat's heartbeat older than this is not ready.
    "BEAT_MAX_AGE_SECONDS": env.int("ALLOTMENT_BEAT_MAX_AGE_SECONDS", default=120),
    # A connector plugs its backlog in here (a dotted path to a callable returning an int).
    "CONNECTOR_BACKLOG": env(
        "ALLOTMENT_CONNECTOR_BACKLOG", default="allocator.connectors.selectors.intents_backlog"
    ),
    "CONNECTOR_BACKLOG_MAX": env.int("ALLOTMENT_CONNECTOR_BACKLOG_MAX", default=100),
    # /readyz: more emails due but unsent than this is not ready.
    "EMAIL_BACKLOG_MAX": env.int("ALLOTMENT_EMAIL_BACKLOG_MAX", default=1000),
    # More readiness checks (dotted paths to callables returning ops.health.Check).
    "READINESS_CHECKS": [],
}

# --- Logs: JSON lines with request/task context (config/logging.py). ---
DJANGO_STRUCTLOG_CELERY_ENABLED = True
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = True
# The ingress's X-Request-ID (JSON-encoded in the logs, so a client's value cannot forge lines),
# so one id follows a call from the proxy's log through the app's into the worker's.
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = env.bool("TRUST_UPSTREAM_REQUEST_ID", default=True)
# Celery keeps Django's logging (JSON) instead of installing its own handlers.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
LOGGING = configure_logging(
    level=env("LOG_LEVEL", default="INFO"), fmt=env("LOG_FORMAT", default="json")
)

refuse_debug_in_public(debug=DEBUG, allowed_hosts=ALLOWED_HOSTS)
