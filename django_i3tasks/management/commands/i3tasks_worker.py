from __future__ import annotations

import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_i3tasks.logs import route_google_loggers
from django_i3tasks.worker import Worker, WorkerError, WorkerOptions


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = kind.__name__
    return parse


class Command(BaseCommand):
    help = (
        "Serve a pull queue: streaming pull from its subscription, N tasks at a time. "
        "SIGTERM/SIGINT stops gracefully (a second one exits at once)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--queue", required=True, help="name of a PullQueue in I3TASKS")
        parser.add_argument("--concurrency", type=_positive(int), default=8,
                            help="messages leased and tasks run at once (default 8)")
        parser.add_argument("--max-tasks", type=_positive(int), default=None,
                            help="exit after about this many tasks (lowered by up to 10%% "
                                 "at random)")
        parser.add_argument("--max-lifetime", type=_positive(float), default=None,
                            help="exit after about this many seconds (lowered by up to 10%% "
                                 "at random)")
        parser.add_argument("--grace-period", type=float, default=30.0,
                            help="seconds running tasks get to finish when stopping "
                                 "(default 30)")
        parser.add_argument("--status-interval", type=_positive(float), default=10.0,
                            help="seconds between status lines (default 10)")
        parser.add_argument("--no-google-log-routing", action="store_true",
                            help="leave Google's client loggers as the library sets them "
                                 "(by default their records go to the project's handlers)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_google_log_routing"]:
            # The Pub/Sub client turns propagation off on the "google" logger: without this
            # its warnings ("Background thread did not exit", stream errors) bypass LOGGING.
            route_google_loggers()
        try:
            worker = Worker(
                WorkerOptions(
                    queue_name=options["queue"],
                    concurrency=options["concurrency"],
                    max_tasks=options["max_tasks"],
                    max_lifetime=options["max_lifetime"],
                    grace_period=options["grace_period"],
                    status_interval=options["status_interval"],
                ),
                out=self.stdout,
            )
            if threading.current_thread() is threading.main_thread():
                worker.install_signal_handlers()
            code = worker.run()
        except WorkerError as exc:
            raise CommandError(str(exc)) from None
        if code:
            sys.exit(code)
