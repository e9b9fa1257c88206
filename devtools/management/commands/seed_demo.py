from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from devtools.demo import load_demo, load_demo_requests


class Command(BaseCommand):
    help = "Load the demo lab (PRODUCT.md section 7). Safe to run again: it finds, not duplicates."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Load even outside demo mode (creates sign-in users with the password 'demo').",
        )

    def handle(self, *args, force=False, **options):
        if not settings.ALLOTMENT.get("DEMO") and not force:
            raise CommandError(
                "Demo users have the password 'demo': refusing outside demo settings. "
                "Use DJANGO_SETTINGS_MODULE=config.settings.demo, or --force."
            )
        data = load_demo()
        filed = load_demo_requests(data)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo lab ready: {len(data['pools'])} pools, {len(data['projects'])} projects, "
                f"users {', '.join(data['users'])} (password 'demo'); "
                f"{len(filed)} new demo requests filed."
            )
        )
