"""python3 manage.py pool_connect POOL slurm --cluster NAME --partition NAME --gres NAME
[--slurm-conf PATH] [--command-prefix 'ssh head']  (PRODUCT.md section 9; idempotent)."""

from django.core.management.base import BaseCommand, CommandError

from ...services import pool_connect
from ...tasks import reconcile_pool
from ._pools import pool_by_name


class Command(BaseCommand):
    help = "Connect a pool to the scheduler that enforces it (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("pool", help="e.g. east/H100")
        parser.add_argument("kind", choices=["slurm"])
        parser.add_argument("--cluster", required=True, help="Slurm ClusterName")
        parser.add_argument("--partition", required=True)
        parser.add_argument("--gres", required=True, help="gpu, or gpu:h100")
        parser.add_argument("--slurm-conf", default="", help="SLURM_CONF for the commands")
        parser.add_argument(
            "--command-prefix", default="", help="run the commands through this, e.g. 'ssh head'"
        )
        parser.add_argument("--no-sync", action="store_true", help="do not queue a first sync")

    def handle(self, *args, **options):
        pool = pool_by_name(options["pool"])
        try:
            connector = pool_connect(
                pool=pool,
                kind=options["kind"],
                cluster=options["cluster"],
                partition=options["partition"],
                gres=options["gres"],
                slurm_conf=options["slurm_conf"],
                command_prefix=options["command_prefix"],
            )
        except ValueError as bad:
            raise CommandError(str(bad)) from bad
        if not options["no_sync"]:
            try:
                reconcile_pool.delay(connector.pk, "connect")
            except Exception as down:  # the periodic reconciler syncs it anyway
                self.stderr.write(f"could not queue a sync ({down}); the periodic sync will run")
        self.stdout.write(
            f"{pool} is enforced by Slurm cluster {connector.cluster}, partition "
            f"{connector.partition}, GrpTRES=gres/{connector.gres}."
        )
