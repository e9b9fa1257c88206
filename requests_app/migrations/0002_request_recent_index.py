from django.db import migrations, models


class Migration(migrations.Migration):
    """The list page and /api/v1/requests/ order by (created_at DESC, id DESC) with a LIMIT: with
    this index PostgreSQL reads the first page from it instead of sorting every visible request."""

    dependencies = [
        ("requests_app", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="computerequest",
            index=models.Index(fields=["-created_at", "-id"], name="request_recent"),
        ),
    ]
