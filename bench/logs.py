"""Log volume: bytes logged at INFO per 1,000 tasks, through push and through the pull worker.

Run: ``.venv/bin/python bench/logs.py`` (PostgreSQL) or ``--db sqlite``. To measure another
checkout of the code (an older commit, for a before/after), put it first on ``PYTHONPATH``:
``PYTHONPATH=/path/to/checkout .venv/bin/python bench/logs.py``; the package, the test app and
the settings all come from there (the settings are wrapped by ``bench/logs_settings.py``).

It starts its own Pub/Sub emulator (the package's Python one unless ``I3TASKS_EMULATOR`` says
otherwise) and a throwaway database. Logging is production-like: one
root handler at INFO, ``asctime levelname name message`` (``bench/logs_settings.py``);
Django's own loggers as Django configures them (``django.request`` reaches the root handler).

- Push: ``--tasks * 0.7`` executions enqueued with ``.delay()``, in a shuffled order at
  ``--rate`` calls a second, on the default queue, a push
  subscription of the emulator (retry policy 1-10 s) to this process's HTTP server
  (Django's live-server thread, real HTTP, the push view): 64 % ``add`` (success), 14 %
  ``fails_once`` (one retry), 4 % ``always_fails`` (two retries, then failed), 17 % in
  three-step chains of ``link``. Retries are published at once and come back early (the
  503 ``not_due`` answer) until their backoff (2-4 s) has passed.
- Pull: ``--tasks * 0.3`` executions on the ``heavy`` pull queue, served by
  ``manage.py i3tasks_worker --concurrency 4`` in a subprocess with the same ``LOGGING``:
  90 % ``nap`` (success), 10 % ``nap_fails`` (one retry, then failed).

Counted: every byte the root handler wrote (the web side: this process, which is also the
enqueuer), and the worker's stderr (its log) and stdout (its start/stop lines; the status
interval is set to an hour). Printed: bytes per 1,000 tasks of each, and lines per logger
and level. Output of Google's loggers that bypasses the handlers is not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent
#: Seconds a side may take to finish once enqueued.
args_timeout = 300.0
# The code measured: the first PYTHONPATH entry that holds the package, else this checkout.
sys.path.append(str(BENCH.parent))
sys.path.insert(0, str(BENCH))

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>\S+) ")


def tally(text: str) -> tuple[Counter[str], dict[str, str]]:
    """Lines per ``level name`` (lines that continue a record, tracebacks, as one key), and
    the first line of each."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for line in text.splitlines():
        match = LINE.match(line)
        key = f"{match['level']} {match['name']}" if match else "(traceback lines)"
        counts[key] += 1
        first.setdefault(key, line)
    return counts, first


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               left: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}: {left()}")
        time.sleep(0.25)


def code_root() -> Path:
    """The checkout whose package is measured."""
    import django_i3tasks

    return Path(django_i3tasks.__file__).resolve().parent.parent


def finished(queue_name: str, expected: int) -> bool:
    from django_i3tasks.models import TaskExecution

    executions = TaskExecution.objects.filter(queue_name=queue_name)
    return (executions.count() == expected
            and not executions.exclude(status__in=("success", "failed")).exists())


def unfinished(queue_name: str) -> str:
    """What is left, for the message of a run that did not finish."""
    from django.db.models import Count

    from django_i3tasks.models import TaskExecution, TaskExecutionTry

    executions = TaskExecution.objects.filter(queue_name=queue_name)
    tries = TaskExecutionTry.objects.filter(execution__in=executions.exclude(
        status__in=("success", "failed")))
    return (f"executions {dict(executions.values_list('status').annotate(n=Count('id')))}, "
            f"their tries {dict(tries.values_list('status').annotate(n=Count('id')))}")


def chain(tag: str) -> None:
    from tests.testapp.chain_tasks import link

    link.delay(f"{tag}-1").then(link, f"{tag}-2").then(link, f"{tag}-3")


def run_push(count: int, rate: float, buffer: io.StringIO) -> tuple[int, dict[str, int]]:
    """Bytes the web side logged while ``count`` executions ran through push."""
    from django.conf import settings
    from django.db.models import Count
    from django.test.testcases import LiveServerThread

    from django_i3tasks import outbox
    from django_i3tasks.conf import get_settings
    from django_i3tasks.models import TaskExecution
    from django_i3tasks.provisioning import ensure_pubsub
    from tests.testapp import tasks

    server = LiveServerThread("127.0.0.1", lambda app: app)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    queue = dataclasses.replace(
        get_settings().default_queue,
        push_endpoint=f"http://127.0.0.1:{server.port}/i3/tasks-push/",
        min_retry_backoff_seconds=1, max_retry_backoff_seconds=10)
    settings.I3TASKS = dataclasses.replace(settings.I3TASKS, default_queue=queue)
    ensure_pubsub()

    chains = round(count * 0.17 / 3)
    failing = round(count * 0.04)
    retried = round(count * 0.14)
    plain = count - 3 * chains - failing - retried
    calls: list[Callable[[], object]] = []
    calls += [partial(tasks.add.delay, index, 1) for index in range(plain)]
    calls += [partial(tasks.fails_once.delay, f"r{index}") for index in range(retried)]
    calls += [partial(tasks.always_fails.delay, f"f{index}") for index in range(failing)]
    calls += [partial(chain, f"c{index}") for index in range(chains)]
    random.Random(31).shuffle(calls)
    buffer.seek(0)
    buffer.truncate()
    # A steady rate, as in production: enqueued all at once, the backlog would hold the
    # retries' messages back until their backoff is over.
    started = time.monotonic()
    for index, call in enumerate(calls):
        time.sleep(max(0.0, started + index / rate - time.monotonic()))
        with outbox.delivering(timeout=60):
            call()
    wait_until(lambda: finished("default", count), args_timeout, f"{count} push executions",
               lambda: unfinished("default"))
    time.sleep(3)  # late redeliveries
    written = len(buffer.getvalue().encode())
    statuses = dict(TaskExecution.objects.filter(queue_name="default")
                    .values_list("status").annotate(n=Count("id")))
    server.terminate()
    return written, statuses


def run_pull(count: int) -> tuple[int, int, dict[str, int], str]:
    """Bytes the worker wrote to stderr (its log) and stdout while ``count`` ran."""
    from django.db.models import Count

    from django_i3tasks import outbox
    from django_i3tasks.models import TaskExecution
    from tests.helpers import subprocess_env
    from tests.testapp.worker_tasks import nap, nap_fails

    failing = round(count * 0.1)
    env = subprocess_env()
    env["DJANGO_SETTINGS_MODULE"] = "logs_settings"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (
        os.environ.get("PYTHONPATH", ""), str(BENCH.parent), str(BENCH)) if p)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "django", "i3tasks_worker", "--queue", "heavy",
             "--concurrency", "4", "--status-interval", "3600"],
            # The checkout measured is the working directory: ``-m`` puts it first.
            env=env, stdout=out, stderr=err, cwd=code_root())
        try:
            def ready() -> bool:
                out.seek(0)
                if worker.poll() is not None:
                    err.seek(0)
                    raise RuntimeError(f"the worker exited:\n{err.read().decode()}")
                return b"i3tasks_worker pid=" in out.read()

            wait_until(ready, 60, "the worker to start")
            with outbox.delivering(timeout=120):
                for index in range(count - failing):
                    nap.delay(f"n{index}")
                for index in range(failing):
                    nap_fails.delay(f"nf{index}")
            wait_until(lambda: finished("heavy", count), args_timeout,
                       f"{count} pull executions", lambda: unfinished("heavy"))
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    statuses = dict(TaskExecution.objects.filter(queue_name="heavy")
                    .values_list("status").annotate(n=Count("id")))
    return len(stderr), len(stdout), statuses, stderr.decode(errors="replace")


def measure(args: argparse.Namespace) -> None:
    import django
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    django.setup()
    from django.conf import settings
    from django.db import connection

    from django_i3tasks import transport
    from django_i3tasks.provisioning import ensure_pubsub

    buffer = io.StringIO()
    logging.getLogger().handlers[0].setStream(buffer)
    # The live server is Django's development server: its access log is not the app's.
    logging.getLogger("django.server").setLevel(logging.WARNING)
    setup_test_environment()
    settings.I3TASKS = dataclasses.replace(settings.I3TASKS,
                                           namespace=f"bench.logs.{os.getpid()}")
    old = setup_databases(verbosity=0, interactive=False)
    try:
        ensure_pubsub()
        push_count = round(args.tasks * 0.7)
        pull_count = args.tasks - push_count
        push_bytes, push_statuses = run_push(push_count, args.rate, buffer)
        push_log = buffer.getvalue()
        log_bytes, out_bytes, pull_statuses, pull_log = run_pull(pull_count)
        transport.flush()
    finally:
        teardown_databases(old, verbosity=0)

    code = code_root()
    commit = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    per = 1000
    print(f"\n## log volume at INFO, {connection.vendor}; code: {code} ({commit or '?'})")
    print(f"push: {push_count} executions {push_statuses}; "
          f"pull: {pull_count} executions {pull_statuses}")
    print(f"web side (push view + enqueuer): {push_bytes:>9,} B  "
          f"{push_bytes * per / push_count:>9,.0f} B per 1,000 tasks")
    print(f"worker log (stderr):             {log_bytes:>9,} B  "
          f"{log_bytes * per / pull_count:>9,.0f} B per 1,000 tasks")
    print(f"worker stdout (start/stop):      {out_bytes:>9,} B")
    total = push_bytes + log_bytes
    print(f"all logs, {args.tasks} mixed tasks:       {total:>9,} B  "
          f"{total * per / args.tasks:>9,.0f} B per 1,000 tasks")
    for label, text in (("web side", push_log), ("worker log", pull_log)):
        counts, first = tally(text)
        print(f"{label} lines by level and logger (and the first of each):")
        for key, n in sorted(counts.items(), key=lambda item: -item[1]):
            print(f"  {n:>6}  {key}\n          {first[key][:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=15.0,
                        help="push calls enqueued per second (default 15)")
    args = parser.parse_args()
    os.environ["I3TASKS_TEST_DB"] = args.db
    os.environ["DJANGO_SETTINGS_MODULE"] = "logs_settings"
    # The package's emulator applies the push subscription's retry policy to a nacked
    # message; Google's redelivered some not_due messages late or never here.
    os.environ.setdefault("I3TASKS_EMULATOR", "python")
    from django_i3tasks.testing.emulator import PubSubEmulator

    emulator = PubSubEmulator().start()
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.endpoint
    try:
        measure(args)
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
