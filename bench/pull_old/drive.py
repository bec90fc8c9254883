"""The 0.1.9 half of ``bench/pull.py``; runs in the virtualenv that holds django-i3tasks 0.1.9.

It migrates 0.1.9's tables into the benchmark's database, starts 0.1.9's documented pull
worker (``manage.py i3tasks_worker --queue=heavy``; ``--workers N`` starts N of them), runs
one warm-up task through them, then enqueues the tasks with 0.1.9's API (``nap.delay()``)
and waits until every one is recorded as a successful try. The figures go to stdout as one
``RESULT {json}`` line; the workers' output goes to stderr.

The database and emulator come from the environment (see ``oldbench/settings.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def _load_processes() -> ModuleType:
    """This repository's ``django_i3tasks/testing/processes.py`` (standard library only),
    loaded by path: in this virtualenv the name ``django_i3tasks`` is 0.1.9."""
    path = HERE.parent.parent / "django_i3tasks" / "testing" / "processes.py"
    spec = importlib.util.spec_from_file_location("i3tasks_bench_processes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_processes = _load_processes()
OutputProcess = _processes.OutputProcess
wait_until = _processes.wait_until

WORKER_READY = "Pull worker started"


class OldWorker(OutputProcess):
    """0.1.9's ``i3tasks_worker`` in a subprocess."""

    def __init__(self, queue: str) -> None:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "oldbench.settings",
               "PYTHONUNBUFFERED": "1"}
        super().__init__([sys.executable, "-m", "django", "i3tasks_worker", f"--queue={queue}"],
                         env, HERE)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for_line(WORKER_READY, timeout, anywhere=True)

    def stop(self) -> int | None:
        """SIGINT (0.1.9 stops on KeyboardInterrupt), then SIGTERM, then SIGKILL."""
        for signum, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self.process.poll() is not None:
                break
            self.process.send_signal(signum)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.wait(5)


def _delete_all(model: type) -> None:
    """Delete every row of ``model``. 0.1.9 marks a try successful before it writes the
    try's result: a worker can still be inserting a result for a try being deleted, which
    PostgreSQL refuses at commit (foreign key); wait a little and try again."""
    from django.db import IntegrityError

    for attempt in range(10):
        try:
            model.objects.all().delete()  # type: ignore[attr-defined]
            return
        except IntegrityError:
            if attempt == 9:
                raise
            time.sleep(0.5)


def _sessions(connection: object) -> int | None:
    """PostgreSQL sessions opened on this database so far (None on SQLite). Backends publish
    their counters at most once a second: wait for the last ones first."""
    if connection.vendor != "postgresql":  # type: ignore[attr-defined]
        return None
    time.sleep(1.1)
    with connection.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database "
                       "WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--poll", type=float, default=0.02)
    parser.add_argument("--warm-up", type=int, default=1, help="tasks run before measuring")
    parser.add_argument("--body", choices=["effect", "compare"], default="effect",
                        help="'compare': bench/compare.py's task bodies (no effect row)")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    os.environ["DJANGO_SETTINGS_MODULE"] = "oldbench.settings"
    import django

    django.setup()  # 0.1.9 runs i3tasks_ensure_pubsub here (its default)
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count, Max

    call_command("migrate", verbosity=0, interactive=False)

    from oldbench.models import Effect
    from oldbench.tasks import nap, nap_only, noop

    from django_i3tasks.models import TaskExecution, TaskExecutionTry

    workers = [OldWorker("heavy") for _ in range(args.workers)]
    result: dict = {"vendor": connection.vendor, "workers": args.workers}
    try:
        for worker in workers:
            worker.wait_ready()
        # Warm-up: tasks through the workers (publisher channel, first pulls, and with
        # --warm-up the database connection of each worker, so the sessions count of the
        # measured tasks is their own).
        for index in range(args.warm_up):
            nap.delay(f"warmup-{index}", 0.0)
        if not wait_until(lambda: TaskExecutionTry.objects.filter(is_success=True).count()
                          >= args.warm_up, 120, 0.05, workers):
            raise RuntimeError("0.1.9 worker did not run the warm-up tasks")
        _delete_all(TaskExecution)
        Effect.objects.all().delete()
        connection.close()

        sessions_before = _sessions(connection)
        started = time.time()
        for index in range(args.tasks):  # each awaits its publish (0.1.9's enqueue)
            if args.body == "effect":
                nap.delay(f"old-{index}", args.seconds)
            elif args.seconds:
                nap_only.delay(index, args.seconds)
            else:
                noop.delay(index)
        enqueued = time.time()

        done = wait_until(
            lambda: TaskExecutionTry.objects.filter(is_success=True).count() >= args.tasks,
            args.timeout, args.poll, workers,
        )
        seen = time.time()
        result["new_sessions"] = None if sessions_before is None else \
            _sessions(connection) - sessions_before
        tries = TaskExecutionTry.objects.filter(is_success=True)
        last = tries.aggregate(last=Max("finished_at"))["last"]
        runs = Effect.objects.filter(key__startswith="old-")
        result.update(
            done=done,
            succeeded=tries.count(),
            failed_tries=TaskExecutionTry.objects.filter(is_completed=False,
                                                         finished_at__isnull=False).count(),
            started=started,
            enqueue_seconds=enqueued - started,
            last_recorded=last.timestamp() if last else None,
            seen=seen,
            effects=runs.count(),
            distinct_effects=runs.values("key").distinct().count(),
            twice=runs.values("key").annotate(n=Count("id")).filter(n__gt=1).count(),
            pids=sorted(set(runs.values_list("pid", flat=True))),
        )
    finally:
        codes = [worker.stop() for worker in workers]
        result["exit_codes"] = codes
        for worker in workers:
            for line in worker.lines[-20:]:
                print(f"  [0.1.9 worker {worker.process.pid}] {line}", file=sys.stderr)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
