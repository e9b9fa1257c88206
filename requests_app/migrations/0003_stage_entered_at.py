from django.db import migrations, models

# When each request waiting for review entered its stage, as the inbox computed it so far: the
# last decision of the round (the division's approval before executive review), else the
# submission.
BACKFILL = """
UPDATE requests_app_computerequest r
SET stage_entered_at = coalesce(
    (SELECT max(s.decided_at) FROM requests_app_approvalstep s
     WHERE s.request_id = r.id AND s.round = r.round),
    r.submitted_at
)
WHERE r.status IN ('pending_division', 'pending_executive')
"""


class Migration(migrations.Migration):
    """ComputeRequest.stage_entered_at, backfilled, and the inbox's index: the inbox ordered by a
    correlated subquery over the approval steps (computed for every request in the stage before
    the first page was kept); now it reads the first page from (status, stage_entered_at, id)."""

    dependencies = [
        ("requests_app", "0002_request_recent_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="computerequest",
            name="stage_entered_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunSQL(BACKFILL, reverse_sql=migrations.RunSQL.noop, elidable=True),
        migrations.AddIndex(
            model_name="computerequest",
            index=models.Index(
                fields=["status", "stage_entered_at", "id"], name="request_stage_age"
            ),
        ),
    ]
