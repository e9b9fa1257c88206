"""python3 manage.py pool_sync POOL: reconcile now; exit status 1 if drift remains
(PRODUCT.md section 9)."""

import sys

from django.core.management.base import BaseCommand, CommandError

from ...models import PoolConnector
from ...reconcile import connector_reconcile
from ._pools import pool_by_name


class Command(BaseCommand):
    help = "Reconcile a pool's scheduler with the ledger now; non-zero exit if drift remains."

    def add_arguments(self, parser):
        parser.add_argument("pool", help="e.g. east/H100")

    def handle(self, *args, **options):
        pool = pool_by_name(options["pool"])
        connector = PoolConnector.objects.filter(pool=pool).first()
        if connector is None:
            raise CommandError(f"{pool} has no connector (see pool_connect).")
        run = connector_reconcile(connector_id=connector.pk, trigger="pool_sync")
        for line in run.drift_found:
            self.stdout.write(f"drift: {line}")
        for line in run.repaired:
            self.stdout.write(f"repaired: {line}")
        for item in run.over_limit:
            self.stdout.write(
                f"over limit: {item['account']} runs {item['running']} GPUs, limit {item['limit']}"
            )
        if run.error:
            self.stderr.write(
                f"error: {run.error}\ncommand: {run.error_command}\n{run.error_output}"
            )
        if run.remaining:
            for line in run.remaining:
                self.stderr.write(f"remaining: {line}")
            sys.exit(1)
        self.stdout.write(f"{pool}: in sync with Slurm cluster {connector.cluster}.")
