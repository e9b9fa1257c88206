"""Pool.version (the column is 0006): PostgreSQL bumps it in the same transaction as every write
that a pool's forecast (allocator/forecast/stored.py) or summaries (allocator/shares/cached.py)
read, so a result stored with the version it was computed from is stale exactly when the
pool's version differs.

Triggers, not calls in the services: they also see the admin, the shell, bulk loads and any
write path added later. What bumps a pool:
- its allocations: insert, delete, and an update of start, end, GPUs, state, pool or project
  (every ledger entry records such a write, so the ledger is covered);
- its changes (the waiting queue and approved changes not yet applied): insert, delete, and an
  update of anything the queue order or a plan reads (status, priority, GPUs, period, kind,
  flexibility, executive review, approval time, target) — not the dispatch bookkeeping
  (dispatched_at, attempts, last_error), which changes nothing a forecast shows;
- its capacity changes and its division shares (insert, delete, update of what they say);
- the reclaims of its allocations (insert, delete, update of status or terms);
- its own name (the reasons name it), and the names, confidentiality and divisions of the
  projects, teams and divisions that hold or wait in it (the reasons name them, or not).

The bump takes the pool row's NO KEY UPDATE lock, in pk order, until commit. Every engine write
already holds the stronger FOR UPDATE lock (allocator/locks.py), so it costs them nothing; the
writers that do not (a final approval inserting its change, an executive resuming or ops
retrying one, a claim settling a change failed, a share edit) now wait for an apply on that pool
to commit. None of them holds a row the engine waits for while it holds the pool (locks.py
explains the order), so no cycle is added.
"""

from django.db import migrations

FUNCTIONS = """
CREATE FUNCTION allocator_pools_bump(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    -- pk order, as allocator/locks.py takes pool rows: two bumps never deadlock each other.
    PERFORM 1 FROM allocator_pool WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE;
    UPDATE allocator_pool SET version = version + 1 WHERE id = ANY(ids);
END $$;

-- Statement-level, after INSERT or DELETE: the rows are in the transition table `changed`.
CREATE FUNCTION allocator_bump_changed_pools() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM allocator_pools_bump(ARRAY(SELECT DISTINCT pool_id FROM changed));
    RETURN NULL;
END $$;

CREATE FUNCTION allocator_bump_changed_reclaim_pools() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM allocator_pools_bump(ARRAY(
        SELECT DISTINCT a.pool_id FROM allocator_allocation a
        WHERE a.id IN (SELECT allocation_id FROM changed)
    ));
    RETURN NULL;
END $$;

-- Row-level, after an UPDATE whose WHEN clause names the columns that matter.
CREATE FUNCTION allocator_bump_row_pool() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM allocator_pools_bump(ARRAY[OLD.pool_id, NEW.pool_id]::bigint[]);
    RETURN NULL;
END $$;

CREATE FUNCTION allocator_bump_row_reclaim_pool() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM allocator_pools_bump(ARRAY(
        SELECT DISTINCT a.pool_id FROM allocator_allocation a
        WHERE a.id IN (OLD.allocation_id, NEW.allocation_id)
    ));
    RETURN NULL;
END $$;

-- A Python save() of a Pool read earlier must not move the version back; a new name bumps it.
CREATE FUNCTION allocator_pool_version_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := GREATEST(
        NEW.version,
        OLD.version + CASE WHEN OLD.cluster IS DISTINCT FROM NEW.cluster
                             OR OLD.gpu_model IS DISTINCT FROM NEW.gpu_model THEN 1 ELSE 0 END
    );
    RETURN NEW;
END $$;

CREATE FUNCTION allocator_bump_project_pools() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM allocator_pools_bump(ARRAY(
        SELECT pool_id FROM allocator_allocation WHERE project_id = NEW.id
        UNION SELECT pool_id FROM allocator_allocationchange WHERE project_id = NEW.id
    ));
    RETURN NULL;
END $$;

CREATE FUNCTION allocator_bump_team_pools() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM allocator_pools_bump(ARRAY(
        SELECT a.pool_id FROM allocator_allocation a
        JOIN org_project p ON p.id = a.project_id WHERE p.team_id = NEW.id
        UNION SELECT c.pool_id FROM allocator_allocationchange c
        JOIN org_project p ON p.id = c.project_id WHERE p.team_id = NEW.id
    ));
    RETURN NULL;
END $$;

CREATE FUNCTION allocator_bump_all_pools() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM allocator_pools_bump(ARRAY(SELECT id FROM allocator_pool));
    RETURN NULL;
END $$;
"""


def _statement_triggers(table: str, function: str) -> str:
    return f"""
CREATE TRIGGER {table}_version_insert AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {function}();
CREATE TRIGGER {table}_version_delete AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""


def _distinct(*columns: str) -> str:
    return " OR ".join(f'OLD."{c}" IS DISTINCT FROM NEW."{c}"' for c in columns)


def _update_trigger(table: str, function: str, *columns: str) -> str:
    return f"""
CREATE TRIGGER {table}_version_update AFTER UPDATE ON {table}
    FOR EACH ROW WHEN ({_distinct(*columns)}) EXECUTE FUNCTION {function}();
"""


TRIGGERS = "".join(
    [
        _statement_triggers("allocator_allocation", "allocator_bump_changed_pools"),
        _update_trigger(
            "allocator_allocation",
            "allocator_bump_row_pool",
            "start",
            "end",
            "gpus",
            "state",
            "pool_id",
            "project_id",
        ),
        _statement_triggers("allocator_allocationchange", "allocator_bump_changed_pools"),
        _update_trigger(
            "allocator_allocationchange",
            "allocator_bump_row_pool",
            "status",
            "priority",
            "gpus",
            "start",
            "end",
            "kind",
            "flexible_start",
            "executive_reviewed",
            "approved_at",
            "target_allocation_id",
            "pool_id",
            "project_id",
        ),
        _statement_triggers("allocator_capacitychange", "allocator_bump_changed_pools"),
        _update_trigger(
            "allocator_capacitychange",
            "allocator_bump_row_pool",
            "delta",
            "effective_at",
            "kind",
            "pool_id",
        ),
        _statement_triggers("allocator_divisionshare", "allocator_bump_changed_pools"),
        _update_trigger(
            "allocator_divisionshare", "allocator_bump_row_pool", "gpus", "pool_id", "division_id"
        ),
        _statement_triggers("allocator_reclaim", "allocator_bump_changed_reclaim_pools"),
        _update_trigger(
            "allocator_reclaim",
            "allocator_bump_row_reclaim_pool",
            "status",
            "new_gpus",
            "new_end",
            "effective_at",
            "transfer_to_id",
            "allocation_id",
        ),
        """
CREATE TRIGGER allocator_pool_version_keep BEFORE UPDATE ON allocator_pool
    FOR EACH ROW EXECUTE FUNCTION allocator_pool_version_keep();
""",
        _update_trigger(
            "org_project", "allocator_bump_project_pools", "name", "confidential", "team_id"
        ),
        _update_trigger("org_team", "allocator_bump_team_pools", "division_id"),
        _update_trigger("org_division", "allocator_bump_all_pools", "name"),
    ]
)

TABLES = [
    "allocator_allocation",
    "allocator_allocationchange",
    "allocator_capacitychange",
    "allocator_divisionshare",
    "allocator_reclaim",
]

DROP = (
    "".join(
        f"DROP TRIGGER IF EXISTS {t}_version_{event} ON {t};"
        for t in TABLES
        for event in ("insert", "delete", "update")
    )
    + "DROP TRIGGER IF EXISTS allocator_pool_version_keep ON allocator_pool;"
    + "DROP TRIGGER IF EXISTS org_project_version_update ON org_project;"
    + "DROP TRIGGER IF EXISTS org_team_version_update ON org_team;"
    + "DROP TRIGGER IF EXISTS org_division_version_update ON org_division;"
    + "".join(
        f"DROP FUNCTION IF EXISTS {f};"
        for f in (
            "allocator_bump_changed_pools()",
            "allocator_bump_changed_reclaim_pools()",
            "allocator_bump_row_pool()",
            "allocator_bump_row_reclaim_pool()",
            "allocator_pool_version_keep()",
            "allocator_bump_project_pools()",
            "allocator_bump_team_pools()",
            "allocator_bump_all_pools()",
            "allocator_pools_bump(bigint[])",
        )
    )
)


class Migration(migrations.Migration):
    dependencies = [
        ("allocator", "0007_waiting_gpus_index"),
        ("org", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(FUNCTIONS + TRIGGERS, reverse_sql=DROP),
    ]
