"""Database session settings the app relies on (config/settings/base.py)."""

from django.db import connection


def test_a_stalled_transaction_is_bounded(db):
    # given the app's database session
    with connection.cursor() as cursor:
        # when PostgreSQL is asked how long a session may sit idle inside a transaction
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        value = cursor.fetchone()[0]
    # then it is bounded (a paused worker holding the pool lock is ended: PROOFS.md F7)
    assert value == "1min"
