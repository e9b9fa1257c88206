"""The audit trail's hash chain (audit.models.AuditChainLink): allotment_audit_link_pending()
links committed audit rows after the last link; the rows that exist are chained here. The chain table is
append-only like the trail (0002's function), and the app role may only insert and read it."""

import django.db.models.deletion
from django.db import migrations, models


# The digest of one audit row: its content as text, in UTC whatever the session's time zone
# (a restored copy or another client computes the same string).
DIGEST = """
CREATE OR REPLACE FUNCTION allotment_audit_digest(e audit_auditevent, prev text) RETURNS text
LANGUAGE sql STABLE SET timezone TO 'UTC' AS $$
    SELECT encode(sha256(convert_to(concat_ws(chr(31),
        prev, e.id::text, e.at::text, coalesce(e.actor_id::text, ''), e.action, e.object_type,
        e.object_id::text, e.object_repr, e.before::text, e.after::text, e.message
    ), 'UTF8')), 'hex')
$$;
"""

# Links every committed audit row not linked yet, oldest id first, after the last link; one
# linker at a time (a transaction-scoped advisory lock). Writers never take part: an audit row
# is linked by the next run after its transaction commits (ops.tasks.audit_chain_link, every
# few seconds, and ledger_verify), so the chain costs the apply path nothing and can deadlock
# with nothing. `since` limits the scan to recent rows for the periodic run.
LINK = """
CREATE OR REPLACE FUNCTION allotment_audit_link_pending(since timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    e audit_auditevent;
    last text;
    linked integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(727001);
    SELECT hash INTO last FROM audit_auditchainlink ORDER BY position DESC LIMIT 1;
    last := coalesce(last, '');
    FOR e IN
        SELECT a.* FROM audit_auditevent a
        WHERE a.at >= since
          AND NOT EXISTS (SELECT 1 FROM audit_auditchainlink l WHERE l.event_id = a.id)
        ORDER BY a.id
    LOOP
        INSERT INTO audit_auditchainlink (event_id, prev_hash, hash)
            VALUES (e.id, last, allotment_audit_digest(e, last));
        last := allotment_audit_digest(e, last);
        linked := linked + 1;
    END LOOP;
    RETURN linked;
END;
$$;
"""

TRIGGERS = """
CREATE TRIGGER audit_auditchainlink_append_only BEFORE UPDATE OR DELETE ON audit_auditchainlink
    FOR EACH ROW EXECUTE FUNCTION allotment_refuse_change();
CREATE TRIGGER audit_auditchainlink_no_truncate BEFORE TRUNCATE ON audit_auditchainlink
    FOR EACH STATEMENT EXECUTE FUNCTION allotment_refuse_change();
"""

# The rows that exist now, oldest first.
CHAIN_EXISTING = "SELECT allotment_audit_link_pending('-infinity');"

APP_ROLE = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'allotment_app') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_auditchainlink FROM allotment_app;
        GRANT SELECT, INSERT ON audit_auditchainlink TO allotment_app;
        GRANT USAGE, SELECT ON SEQUENCE audit_auditchainlink_position_seq TO allotment_app;
    END IF;
END
$$;
"""

FORWARDS = [DIGEST, LINK, TRIGGERS, CHAIN_EXISTING, APP_ROLE]
BACKWARDS = [
    "DROP TRIGGER IF EXISTS audit_auditchainlink_append_only ON audit_auditchainlink;",
    "DROP TRIGGER IF EXISTS audit_auditchainlink_no_truncate ON audit_auditchainlink;",
    "DROP FUNCTION IF EXISTS allotment_audit_link_pending(timestamptz);",
    "DROP FUNCTION IF EXISTS allotment_audit_digest(audit_auditevent, text);",
]


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0003_app_role'),
    ]


    operations = [
        migrations.CreateModel(
            name='AuditChainLink',
            fields=[
                ('position', models.BigAutoField(primary_key=True, serialize=False)),
                ('prev_hash', models.CharField(max_length=64)),
                ('hash', models.CharField(max_length=64)),
                ('event', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='chain_link', to='audit.auditevent')),
            ],
            options={
                'ordering': ['position'],
            },
        ),
        migrations.RunSQL(FORWARDS, BACKWARDS),
    ]
