"""The application's database role, `allotment_app` (NOLOGIN): normal rights on every table, but
only INSERT and SELECT on the audit trail and the ledger, so that UPDATE, DELETE and TRUNCATE of
them are refused by PostgreSQL's privileges, not only by Django and the triggers of 0002.

Deployments run the app as a login role that is a member of `allotment_app` and assumes it on
connect (DATABASE_ROLE=allotment_app sets Django's `assume_role`). Creating a role needs
CREATEROLE: where the migrating user lacks it, the role is left to the DBA and only a notice is
raised; the grants are made whenever the role exists."""

from django.db import migrations

ROLE = "allotment_app"
APPEND_ONLY = ["audit_auditevent", "allocator_ledgerentry"]

FORWARDS = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        BEGIN
            CREATE ROLE {ROLE} NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role {ROLE}: ask the DBA, then migrate again';
            RETURN;
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {ROLE}', current_database());
    GRANT USAGE ON SCHEMA public TO {ROLE};
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE};
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ROLE};
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ROLE};
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {ROLE};
    REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
        ON {", ".join(APPEND_ONLY)} FROM {ROLE};
    GRANT SELECT, INSERT ON {", ".join(APPEND_ONLY)} TO {ROLE};
END
$$;
"""

BACKWARDS = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM {ROLE};
        REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ROLE};
        REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ROLE};
        REVOKE USAGE ON SCHEMA public FROM {ROLE};
        EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {ROLE}', current_database());
    END IF;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_append_only_triggers"),
        ("allocator", "0001_initial"),
    ]

    # Grants are also needed on tables of apps migrated later: ALTER DEFAULT PRIVILEGES covers
    # tables the migrating role creates from now on.
    operations = [migrations.RunSQL(FORWARDS, BACKWARDS)]
