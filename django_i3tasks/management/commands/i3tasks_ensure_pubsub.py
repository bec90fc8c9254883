from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_i3tasks.provisioning import check_pubsub, ensure_pubsub


class Command(BaseCommand):
    help = ("Create or update the Pub/Sub topics and subscriptions described by I3TASKS; "
            "with --check, only compare them and exit 1 on any difference.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only print what would change")
        parser.add_argument("--check", action="store_true",
                            help="change nothing; print each difference between Pub/Sub and "
                                 "the settings and exit 1 when there is one (a release gate)")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds per API call")

    def handle(self, *args: Any, dry_run: bool = False, check: bool = False,
               timeout: float = 30.0, **options: Any) -> None:
        from google.api_core.exceptions import GoogleAPICallError, RetryError

        try:
            if check:
                return self._check(timeout)
            actions = ensure_pubsub(dry_run=dry_run, timeout=timeout)
        except (GoogleAPICallError, RetryError, RuntimeError) as exc:
            raise CommandError(f"Pub/Sub provisioning failed: {exc}") from exc
        prefix = "[dry run] " if dry_run else ""
        for action in actions:
            self.stdout.write(f"{prefix}{action}")
        changed = sum(action.verb != "ok" for action in actions)
        self.stdout.write(f"{prefix}{changed} change(s), {len(actions) - changed} unchanged")
        return None

    def _check(self, timeout: float) -> None:
        differences = check_pubsub(timeout=timeout)
        for difference in differences:
            self.stdout.write(f"differs {difference}")
        if differences:
            raise CommandError(
                f"{len(differences)} difference(s) between Pub/Sub and the settings; "
                "'manage.py i3tasks_ensure_pubsub' applies what can be changed in place.",
                returncode=1)
        self.stdout.write("Pub/Sub is in sync with the settings.")
