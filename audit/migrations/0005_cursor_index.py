from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Indexes for the API list's cursor orders (common/pagination.py): each page is read from
    the index at the cursor's key, so the last page costs what the first does."""

    dependencies = [
        ("audit", "0004_hash_chain"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["-at", "-id"], name="audit_recent"),
        ),
    ]
