"""Structured logs: one JSON object per line, from every logger (Django's, Celery's, the
security log, the app's), with the context django-structlog binds: `request_id` (the client's
X-Request-ID or a new one), `user_id`, `ip`, and — carried in the task's headers into the Celery
task a request sends — the same `request_id` in the worker, with `task_id` and `change_id`.

Never logged: request bodies (so no justification text), passwords, tokens, cookies. The
`_redact` processor below drops such keys should any code pass one as a field.
"""

from __future__ import annotations

import structlog
from structlog.typing import Processor

SENSITIVE_KEYS = {
    "password",
    "token",
    "authorization",
    "cookie",
    "secret",
    "sessionid",
    "csrftoken",
    "goal",
    "expected_outcome",
    "size_rationale",
    "impact_if_denied",
    "justification",
}


def _redact(logger, method_name, event_dict):
    for key in list(event_dict):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _redact,
]


def configure(*, level: str, fmt: str) -> dict:
    """Configure structlog and return Django's LOGGING dict."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                # Records from plain `logging` loggers (Django, Celery, the security log) get
                # the same fields and context.
                "foreign_pre_chain": [*SHARED, structlog.stdlib.ExtraAdder()],
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # The request_finished line of django-structlog already says this.
            "django.server": {"level": "WARNING"},
        },
    }
