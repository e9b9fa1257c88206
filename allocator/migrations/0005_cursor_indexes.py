from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Indexes for the API list's cursor orders (common/pagination.py): each page is read from
    the index at the cursor's key, so the last page costs what the first does."""

    dependencies = [
        ("allocator", "0004_delete_faultinjection"),
        ("org", "0002_cursor_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="allocation",
            index=models.Index(fields=["end", "id"], name="allocation_by_end"),
        ),
        migrations.AddIndex(
            model_name="allocation",
            index=models.Index(fields=["gpus", "id"], name="allocation_by_gpus"),
        ),
        migrations.AddIndex(
            model_name="capacitychange",
            index=models.Index(fields=["-effective_at", "-id"], name="capacity_change_recent"),
        ),
    ]
