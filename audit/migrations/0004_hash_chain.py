"""The audit trail's hash chain (audit.models.AuditChainLink): a deferred trigger links every
new audit row at commit; existing rows are chained here, oldest first. The chain table is
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

# At commit, one writer at a time (a transaction-scoped advisory lock, released by the commit):
# the new row's link names the last link's hash.
LINK = """
CREATE OR REPLACE FUNCTION allotment_audit_link() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last text;
BEGIN
    PERFORM pg_advisory_xact_lock(727001);
    SELECT hash INTO last FROM audit_auditchainlink ORDER BY position DESC LIMIT 1;
    last := coalesce(last, '');
    INSERT INTO audit_auditchainlink (event_id, prev_hash, hash)
        VALUES (NEW.id, last, allotment_audit_digest(NEW, last));
    RETURN NULL;
END;
$$;
"""

TRIGGERS = """
CREATE CONSTRAINT TRIGGER audit_auditevent_chain AFTER INSERT ON audit_auditevent
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION allotment_audit_link();
CREATE TRIGGER audit_auditchainlink_append_only BEFORE UPDATE OR DELETE ON audit_auditchainlink
    FOR EACH ROW EXECUTE FUNCTION allotment_refuse_change();
CREATE TRIGGER audit_auditchainlink_no_truncate BEFORE TRUNCATE ON audit_auditchainlink
    FOR EACH STATEMENT EXECUTE FUNCTION allotment_refuse_change();
"""

# Existing rows, oldest first (their ids are their order).
CHAIN_EXISTING = """
DO $$
DECLARE
    e audit_auditevent;
    last text := '';
BEGIN
    FOR e IN SELECT * FROM audit_auditevent ORDER BY id LOOP
        INSERT INTO audit_auditchainlink (event_id, prev_hash, hash)
            VALUES (e.id, last, allotment_audit_digest(e, last));
        last := allotment_audit_digest(e, last);
    END LOOP;
END
$$;
"""

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
    "DROP TRIGGER IF EXISTS audit_auditevent_chain ON audit_auditevent;",
    "DROP TRIGGER IF EXISTS audit_auditchainlink_append_only ON audit_auditchainlink;",
    "DROP TRIGGER IF EXISTS audit_auditchainlink_no_truncate ON audit_auditchainlink;",
    "DROP FUNCTION IF EXISTS allotment_audit_link();",
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
