from __future__ import annotations

import signal
import time
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from django_i3tasks.beat import run_beat
from django_i3tasks.logs import route_google_loggers


class Command(BaseCommand):
    help = (
        "Run the beat every minute in this process (local development, or a deployment "
        "without Cloud Scheduler): schedules, delayed tasks, lost-message recovery."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="one beat, then exit")
        parser.add_argument("--no-google-log-routing", action="store_true",
                            help="leave Google's client loggers as the library sets them "
                                 "(by default their records go to the project's handlers)")

    def handle(self, *args: Any, once: bool = False, **options: Any) -> None:
        if not options.get("no_google_log_routing"):
            route_google_loggers()  # as i3tasks_worker: the publisher's warnings in LOGGING
        stopping = []
        if not once:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stopping.append(True))
            self.stdout.write("i3tasks_beat: one beat at the start of every minute (Ctrl-C stops)")
        while True:
            minute = timezone.now().replace(second=0, microsecond=0)
            self._beat(minute)
            if once:
                return
            next_minute = minute.timestamp() + 60
            while not stopping and time.time() < next_minute:
                time.sleep(min(0.5, max(0.0, next_minute - time.time())))
            if stopping:
                self.stdout.write("i3tasks_beat: stopped")
                return

    def _beat(self, minute: Any) -> None:
        report = run_beat(minute)  # waits until its messages left (or failed to)
        self.stdout.write(
            f"{minute.isoformat()} enqueued {len(report.enqueued)}, "
            f"already done {len(report.skipped)}, delayed released {report.released}, "
            f"republished {report.republished}, publish failed {report.publish_failed}"
        )
        if report.publish_failed:
            self.stderr.write(
                f"  {report.publish_failed} message(s) could not be published (see the log); "
                "their tries stay queued and the recovery sweep publishes them again"
            )
        for entry in report.enqueued:
            self.stdout.write(f"  {entry['schedule']} @ {entry['slot']} -> {entry['execution']}")
