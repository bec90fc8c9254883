"""Chaos: 10,000 tasks through push delivery while things break; nothing may be lost.

Run: ``.venv/bin/python bench/chaos.py`` (``--tasks 1000`` for a short run). PostgreSQL, in a
database of its own (``i3tasks_chaos``, dropped and created again).

- The package's Python Pub/Sub emulator with fault injection: every delivery POSTed three
  times, 5 % of deliveries failed (half before the request, half after the view answered).
- gunicorn (3 workers, 4 threads) serves the push view; one worker is SIGKILLed every 2-4 s
  (the master starts a new one), with tasks in flight.
- The beat endpoint is called every minute (delayed tasks, the recovery sweep).
- Each task writes one ``Effect`` row per run of its body (not unique), so a double run
  shows; the try's ``claims`` says whether a worker's hold on it was taken over.

It prints the tasks lost (not finished successfully at the end; must be 0) and the extra
runs, split into those of tries that a killed worker held (``claims`` > 1: the worker died
after the body ran and before the success was recorded, and the lease expired) and any
others (must be 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "i3tasks_chaos"
LEASE_SECONDS = 15


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True,
                         text=True).stdout
    return [int(pid) for pid in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds, on average")
    parser.add_argument("--wait", type=float, default=900.0,
                        help="at most this long for the last tasks after the enqueueing")
    options = parser.parse_args()
    import psycopg

    from django_i3tasks.testing.emulator import PubSubEmulator, free_port

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    env = {"I3TASKS_TEST_DB": "postgres", "I3TASKS_TEST_DB_NAME": DB_NAME,
           "I3TASKS_TEST_LEASE_SECONDS": str(LEASE_SECONDS), "I3TASKS_TEST_NAMESPACE": "chaos",
           "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)
    os.environ["I3TASKS_EMULATOR_PUSH_FAULTS"] = "copies=3,fail=0.05"
    emulator = PubSubEmulator(kind="python", push_concurrency=16).start()
    os.environ.pop("I3TASKS_EMULATOR_PUSH_FAULTS")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.endpoint
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db.models import Count

    from django_i3tasks import transport
    from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry
    from django_i3tasks.provisioning import ensure_pubsub
    from tests.testapp.models import Effect
    from tests.testapp.worker_tasks import nap

    call_command("migrate", verbosity=0, run_syncdb=True)  # the test app has no migrations
    port = free_port()
    settings.I3TASKS = dataclasses.replace(settings.I3TASKS, default_queue=dataclasses.replace(
        settings.I3TASKS.default_queue, push_endpoint=f"http://127.0.0.1:{port}/i3/tasks-push/",
        ack_deadline_seconds=10, min_retry_backoff_seconds=1, max_retry_backoff_seconds=5))
    ensure_pubsub()
    log = open(Path(tempfile.gettempdir()) / f"i3tasks-chaos-gunicorn-{os.getpid()}.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "django.core.wsgi:get_wsgi_application()",
         "-b", f"127.0.0.1:{port}", "-w", "3", "--threads", "4", "--log-level", "warning"],
        env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    stop = threading.Event()
    kills: list[int] = []
    beats: list[int] = []

    def killer() -> None:
        while not stop.wait(random.uniform(0.67, 1.33) * options.kill_every):
            pids = worker_pids(server.pid)
            if pids:
                victim = random.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    kills.append(victim)
                except ProcessLookupError:
                    pass

    def minute_beat() -> None:
        while not stop.is_set():
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/i3/tasks-beat/",
                                                 data=b"", method="POST")
                with urllib.request.urlopen(request, timeout=60) as response:
                    beats.append(response.status)
            except OSError as exc:  # a killed worker's request: the next minute comes
                beats.append(getattr(exc, "code", 0) or 0)
            stop.wait(60)

    try:
        time.sleep(3)  # gunicorn's workers up
        threads = [threading.Thread(target=killer, daemon=True),
                   threading.Thread(target=minute_beat, daemon=True)]
        for thread in threads:
            thread.start()
        began = time.monotonic()
        print(f"# bench/chaos.py: {options.tasks:,} tasks; machine: {os.cpu_count()} cores, "
              "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
        on_push = nap.using(queue_name="default")
        for number in range(options.tasks):
            on_push.delay(f"chaos-{number}", 0.02)
        enqueued = time.monotonic() - began
        print(f"enqueued in {enqueued:.0f} s; {len(kills)} workers killed so far", flush=True)
        deadline = time.monotonic() + options.wait
        done = 0
        while time.monotonic() < deadline:
            done = TaskExecution.objects.filter(status=ExecutionStatus.SUCCESS).count()
            if done >= options.tasks:
                break
            if time.monotonic() - began > enqueued + 120 and not stop.is_set():
                # Two minutes of chaos after the last enqueue; then let the tail settle (the
                # tries held by killed workers wait for their lease).
                stop.set()
                print(f"killing stopped at {done:,} done, {len(kills)} kills", flush=True)
            time.sleep(2)
        elapsed = time.monotonic() - began
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)
        transport.flush()
        emulator.stop()
    lost = options.tasks - done
    runs = dict(Effect.objects.values_list("key").annotate(n=Count("id")).values_list("key", "n"))
    extra = {key: n - 1 for key, n in runs.items() if n > 1}
    held_keys = {args[0] for args in TaskExecutionTry.objects.filter(claims__gt=1).values_list(
        "execution__args", flat=True) if args}
    extra_held = sum(n for key, n in extra.items() if key in held_keys)
    extra_other = sum(n for key, n in extra.items() if key not in held_keys)
    never_ran = options.tasks - len(runs)
    print(f"\nworkers SIGKILLed: {len(kills)}; beat calls: {len(beats)} {beats}; every delivery "
          "POSTed 3 times, 5 % of deliveries failed (half after the view answered)")
    print(f"finished: {done:,} of {options.tasks:,} in {elapsed:.0f} s")
    print(f"lost: {lost}")
    print(f"tasks whose body never ran: {never_ran}")
    print(f"extra runs: {sum(extra.values())} (on tries a killed worker held: {extra_held}; "
          f"other: {extra_other}); tries taken over after a kill: {len(held_keys)}")
    print(f"server log: {log.name}")


if __name__ == "__main__":
    main()
