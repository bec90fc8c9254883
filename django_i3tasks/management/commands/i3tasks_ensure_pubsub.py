from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_i3tasks.provisioning import ensure_pubsub


class Command(BaseCommand):
    help = "Create or update the Pub/Sub topics and subscriptions described by I3TASKS."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only print what would change")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds per API call")

    def handle(self, *args: Any, dry_run: bool = False, timeout: float = 30.0, **options: Any):
        from google.api_core.exceptions import GoogleAPICallError, RetryError

        try:
            actions = ensure_pubsub(dry_run=dry_run, timeout=timeout)
        except (GoogleAPICallError, RetryError, RuntimeError) as exc:
            raise CommandError(f"Pub/Sub provisioning failed: {exc}") from exc
        prefix = "[dry run] " if dry_run else ""
        for action in actions:
            self.stdout.write(f"{prefix}{action}")
        changed = sum(action.verb != "ok" for action in actions)
        self.stdout.write(f"{prefix}{changed} change(s), {len(actions) - changed} unchanged")
