"""Health check for celery beat (compose healthcheck, Kubernetes exec probe): exits 0 when the
heartbeat beat sends every 15 s was recorded by a worker recently (ALLOTMENT_BEAT_MAX_AGE_SECONDS)."""

import json
import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Exit 0 if celery beat's heartbeat is recent."

    def handle(self, *args, **options):
        from ops.health import check_beat

        check = check_beat()
        self.stdout.write(json.dumps(check.as_json()))
        if not check.ok:
            sys.exit(1)
