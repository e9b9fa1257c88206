"""Health check for a Celery worker, for an orchestrator's probe (compose healthcheck,
Kubernetes exec probe): exits 0 when a worker whose node name matches --name answers a ping
through the broker within --timeout seconds, 1 otherwise. Prints what answered as JSON."""

import fnmatch
import json
import socket
import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Exit 0 if the named Celery worker answers a ping through the broker."

    def add_arguments(self, parser):
        parser.add_argument(
            "--name",
            default=f"*@{socket.gethostname()}",
            help="worker node name or glob (default: any worker on this host)",
        )
        parser.add_argument("--timeout", type=float, default=3.0)

    def handle(self, *args, name, timeout, **options):
        from celery import current_app as app  # the project's app (config/celery.py)

        try:
            replies = app.control.ping(timeout=timeout) or []
        except Exception as error:  # broker unreachable: unhealthy, and say why (no URL)
            self.stdout.write(json.dumps({"answered": [], "error": type(error).__name__}))
            sys.exit(1)
        nodes = sorted(node for reply in replies for node in reply)
        answered = [node for node in nodes if fnmatch.fnmatchcase(node, name)]
        self.stdout.write(json.dumps({"answered": answered}))
        if not answered:
            sys.exit(1)
