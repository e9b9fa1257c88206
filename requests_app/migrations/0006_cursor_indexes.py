from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Indexes for the API list's cursor orders (common/pagination.py): each page is read from
    the index at the cursor's key, so the last page costs what the first does."""

    dependencies = [
        ("allocator", "0005_cursor_indexes"),
        ("org", "0002_cursor_index"),
        ("requests_app", "0005_stageescalation"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="computerequest",
            index=models.Index(fields=["gpus", "id"], name="request_by_gpus"),
        ),
        migrations.AddIndex(
            model_name="computerequest",
            index=models.Index(fields=["start", "id"], name="request_by_start"),
        ),
    ]
