from django.core.management.base import BaseCommand, CommandError

from devtools.labgen import Scale, generate_lab
from org.models import Division


class Command(BaseCommand):
    help = (
        "Generate a lab-sized data set (PRODUCT.md section 8): 100 pools, 50 teams, 2,000 projects, "
        "100,000 requests, 30,000 allocations. Deterministic for a given --seed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--fraction", type=float, default=1.0, help="Scale down, e.g. 0.1.")
        parser.add_argument(
            "--prefix", default="lab", help="Name prefix, so a set can sit beside the demo."
        )

    def handle(self, *args, seed, fraction, prefix, **options):
        if not 0 < fraction <= 1:
            raise CommandError("--fraction must be in (0, 1].")
        if Division.objects.filter(slug__startswith=f"{prefix}-division-").exists():
            raise CommandError(
                f"A data set with prefix {prefix!r} exists already; pick another --prefix."
            )
        scale = Scale() if fraction == 1 else Scale.fraction(fraction)
        result = generate_lab(scale=scale, seed=seed, prefix=prefix)
        self.stdout.write(self.style.SUCCESS(f"Generated {result}"))
