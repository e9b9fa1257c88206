"""Exit 0 exactly when every allocation's state rebuilds from the ledger and the audit trail's
hash chain is intact; otherwise list what disagrees and exit 1."""

import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Rebuild every allocation from the ledger and check the audit trail's hash chain."

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-link",
            action="store_true",
            help="do not link new audit rows first (a read-only replica)",
        )

    def handle(self, *args, no_link=False, **options):
        from ops.ledger import verify

        report = verify(link=not no_link)
        summary = (
            f"{report.allocations} allocations against {report.entries} ledger entries; "
            f"{report.audit_rows} audit rows in the hash chain"
        )
        if report.ok:
            self.stdout.write(f"ledger_verify: OK. {summary}.")
            return
        self.stdout.write(f"ledger_verify: {len(report.problems)} problems. {summary}.")
        for problem in report.problems[:200]:
            self.stdout.write(f"  - {problem}")
        sys.exit(1)
