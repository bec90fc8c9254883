"""Limits and timing through the emulator's push: 20 tries of a 1 s task with
``concurrency_limit=2``, and the lateness of 50 ``countdown`` calls.

Run: ``.venv/bin/python bench/limits.py`` (PostgreSQL; ``--db sqlite`` works too). It starts
its own Pub/Sub emulator and a live server; the push subscription has Pub/Sub's default
backoff (10 s, growing to 600 s), so any figure near 10 s per wait would mean a redelivery
was waited for. The emulator pushes ``PUSH_CONCURRENCY`` requests at once per subscription
(real push adapts its number of requests in flight); a held countdown keeps one.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
PUSH_CONCURRENCY = 64
os.environ.setdefault("I3TASKS_EMULATOR_PUSH_CONCURRENCY", str(PUSH_CONCURRENCY))
from harness import main  # noqa: E402

TRIES = 20
COUNTDOWNS = 50
COUNTDOWN = 3.0
SPACING = 0.1


def wait_all(ids: list[int], timeout: float) -> None:
    from django_i3tasks.models import TaskExecution

    deadline = time.monotonic() + timeout
    while TaskExecution.objects.filter(pk__in=ids, status="success").count() < len(ids):
        if time.monotonic() > deadline:
            states = list(TaskExecution.objects.filter(pk__in=ids).values_list(
                "status", "wait_reason", "tries__status", "tries__claims"))
            raise SystemExit(f"not all {len(ids)} executions succeeded within {timeout} s: "
                             f"{states}")
        time.sleep(0.1)


def measure(db: str) -> None:
    from django.conf import settings
    from django.db import connection
    from django.test.testcases import LiveServerThread, _StaticFilesHandler

    from django_i3tasks import transport
    from django_i3tasks.conf import get_settings
    from django_i3tasks.provisioning import ensure_pubsub
    from tests.testapp import limit_tasks

    server = LiveServerThread("127.0.0.1", _StaticFilesHandler, connections_override={})
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    url = f"http://127.0.0.1:{server.port}/i3/tasks-push/"
    queue = dataclasses.replace(get_settings().default_queue, push_endpoint=url,
                                ack_deadline_seconds=30, min_retry_backoff_seconds=10,
                                max_retry_backoff_seconds=600)
    settings.I3TASKS = dataclasses.replace(settings.I3TASKS, namespace="benchlimits",
                                           default_queue=queue)
    ensure_pubsub()
    try:
        began = time.time()
        ids = [limit_tasks.two_at_a_time.delay(f"t{i}").id for i in range(TRIES)]
        transport.flush()
        wait_all(ids, 120)
        elapsed = time.time() - began
        spans = limit_tasks.spans("two_at_a_time")
        events = sorted([(s, 1) for _, s, _ in spans] + [(e, -1) for _, _, e in spans])
        running = most = 0
        for _, step in events:
            running += step
            most = max(most, running)

        late = []
        ids = []
        for i in range(COUNTDOWNS):
            due = time.time() + COUNTDOWN
            ids.append(limit_tasks.stamped.using(countdown=COUNTDOWN).delay(f"c{i}:{due}").id)
            time.sleep(SPACING)
        transport.flush()
        wait_all(ids, 120)
        for tag, start, _ in limit_tasks.spans("stamped"):
            late.append(start - float(tag.split(":", 1)[1]))
    finally:
        server.terminate()

    print(f"\n## {db} ({connection.vendor}); emulator push concurrency "
          f"{os.environ['I3TASKS_EMULATOR_PUSH_CONCURRENCY']}")
    print(f"{TRIES} tries x 1 s, concurrency_limit=2, push: {elapsed:.1f} s "
          f"(ideal 10 s, target 15 s); most running at once: {most}")
    print(f"{COUNTDOWNS} x countdown={COUNTDOWN:g} s ({SPACING:g} s apart): lateness median "
          f"{statistics.median(late):.3f} s, max {max(late):.3f} s, min {min(late):.3f} s "
          f"(target: 0 <= lateness <= 2 s)")


if __name__ == "__main__":
    main(__file__, __doc__.splitlines()[0], measure)
