"""Words the notices and their emails use: whole subjects and "in N days"."""

import math
import re
import textwrap
from datetime import timedelta

SUBJECT_PREFIX = "[Allotment] "
# Long enough for every notice's first sentence; mail clients show about this much.
SUBJECT_MAX = 110


def subject_line(message: str) -> str:
    """The notice's first sentence as an email subject, whole when it fits; otherwise shortened
    at a word boundary with an ellipsis (never mid-word)."""
    text = " ".join(message.split())
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    room = SUBJECT_MAX - len(SUBJECT_PREFIX)
    if len(first) > room:
        shortened = textwrap.shorten(first, width=room, placeholder=" …", break_long_words=False)
        # textwrap gives only the placeholder when the first word alone is too long
        first = shortened if shortened != "…" else first[: room - 1] + "…"
        first = first.replace(" …", "…")
    return SUBJECT_PREFIX + first


def time_until_words(remaining: timedelta) -> str:
    """ "in 4 days", "in 7 days", "in 30 hours", "within the hour": what a reminder sent now
    says; in hours under two days (when "tomorrow" could be wrong), else to the nearest day (the
    exact time is given beside it)."""
    seconds = remaining.total_seconds()
    if seconds < 3600:
        return "within the hour"
    if seconds < 2 * 86400:
        hours = math.floor(seconds / 3600)
        return f"in {hours} hour{'s' if hours != 1 else ''}"
    return f"in {round(seconds / 86400)} days"
