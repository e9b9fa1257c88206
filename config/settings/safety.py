"""Guards every settings module calls last, so a mistake stops the process at start."""

from django.core.exceptions import ImproperlyConfigured

LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1", "testserver"}


def refuse_debug_in_public(*, debug: bool, allowed_hosts: list[str]) -> None:
    """DEBUG shows settings and tracebacks to whoever gets an error page: allowed only when
    the app answers this machine alone."""
    if not debug:
        return
    public = [h for h in allowed_hosts if h not in LOCAL_HOSTS and not h.endswith(".localhost")]
    if public:
        raise ImproperlyConfigured(
            f"DEBUG is on and ALLOWED_HOSTS names {', '.join(public)}: turn DEBUG off "
            "(DEBUG=False) or serve this machine only."
        )
