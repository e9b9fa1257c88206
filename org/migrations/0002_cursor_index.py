from django.db import migrations, models


class Migration(migrations.Migration):
    """Indexes for the API list's cursor orders (common/pagination.py): each page is read from
    the index at the cursor's key, so the last page costs what the first does."""

    dependencies = [
        ("org", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="project",
            index=models.Index(fields=["name", "id"], name="project_by_name"),
        ),
    ]
