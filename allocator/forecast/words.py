"""The words forecasts and reasons are written in: an instant, a duration, a project's name as
anyone may read it (confidential projects are not named)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache


@lru_cache(maxsize=8192)  # reasons name the same few instants again and again
def when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%d %b %Y %H:%M UTC").lstrip("0")


def duration_words(d: timedelta) -> str:
    """ "3 days", "1.5 days", "5 hours"."""
    days = d.total_seconds() / 86400
    if days >= 1:
        return f"{days:.0f} days" if days >= 2 or days.is_integer() else f"{days:.1f} days"
    return f"{d.total_seconds() / 3600:.0f} hours"


def project_label(project_name: str, confidential: bool) -> str:
    return "a confidential project" if confidential else f"project {project_name}"
