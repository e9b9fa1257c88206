from django.db import migrations, models


class Migration(migrations.Migration):
    """/api/v1/allocations/ orders by (start DESC, id DESC) with a LIMIT: read it from an index."""

    dependencies = [
        ("allocator", "0002_fault_injection"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="allocation",
            index=models.Index(fields=["-start", "-id"], name="allocation_recent"),
        ),
    ]
