from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_i3tasks.maintenance import clean, vacuum


class Command(BaseCommand):
    help = "Delete finished task executions older than the retention window."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--days", type=int, default=None,
                            help="retention in days (default: I3TASKS.retention_days)")
        parser.add_argument("--dry-run", action="store_true", help="only count")
        parser.add_argument("--no-vacuum", action="store_true",
                            help="PostgreSQL: skip the VACUUM (ANALYZE) after deleting")

    def handle(self, *args: Any, days: int | None = None, dry_run: bool = False,
               no_vacuum: bool = False, **options: Any) -> None:
        if days is not None and days < 0:
            raise CommandError("--days must be 0 or more")
        count = clean(days, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"{verb} {count} finished execution(s)")
        if count and not dry_run and not no_vacuum:
            tables = vacuum()
            if tables:
                self.stdout.write(f"vacuumed {', '.join(tables)}")
