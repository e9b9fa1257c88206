import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("allocator", "0008_pool_version_triggers"),
    ]

    operations = [
        migrations.CreateModel(
            name="StoredForecast",
            fields=[
                (
                    "pool",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="stored_forecast",
                        serialize=False,
                        to="allocator.pool",
                    ),
                ),
                ("version", models.BigIntegerField()),
                ("computed_at", models.DateTimeField()),
                ("stale_at", models.DateTimeField(blank=True, null=True)),
                ("key", models.CharField(max_length=100)),
                ("outcomes", models.JSONField(default=list)),
            ],
        ),
    ]
