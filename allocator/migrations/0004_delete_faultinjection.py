"""FaultInjection moved to a test-only app (tests/support/fault_injection), installed only by the
test settings: drop its table from every database that applied 0002. A plain DeleteModel drops
the table and forgets the model alike (and recreates both if unapplied); 0002 stays, because
deployed databases recorded it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("allocator", "0003_allocation_recent_index"),
    ]

    operations = [
        migrations.DeleteModel(name="FaultInjection"),
    ]
