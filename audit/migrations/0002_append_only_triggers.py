"""The audit trail and the ledger are append-only in the database itself, whatever the client:
UPDATE and DELETE are refused by a row trigger. TRUNCATE is refused too unless the session's role
is a superuser (the test suite resets tables that way; production runs as an ordinary role)."""

from django.db import migrations

TABLES = ["audit_auditevent", "allocator_ledgerentry"]

FUNCTION = """
CREATE OR REPLACE FUNCTION allotment_refuse_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def forwards_sql():
    statements = [FUNCTION]
    for table in TABLES:
        statements.append(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION allotment_refuse_change();"
        )
        statements.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION allotment_refuse_change();"
        )
    return statements


def backwards_sql():
    statements = []
    for table in TABLES:
        statements.append(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};")
    statements.append("DROP FUNCTION IF EXISTS allotment_refuse_change();")
    return statements


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        ("allocator", "0001_initial"),
    ]

    operations = [migrations.RunSQL(forwards_sql(), backwards_sql())]
