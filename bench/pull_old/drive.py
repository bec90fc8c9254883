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
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER_READY = "Pull worker started"


class OldWorker:
    """0.1.9's ``i3tasks_worker`` in a subprocess."""

    def __init__(self, queue: str) -> None:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "oldbench.settings",
               "PYTHONUNBUFFERED": "1"}
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "i3tasks_worker", f"--queue={queue}"],
            cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(WORKER_READY in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("0.1.9 worker did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)

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
        self._reader.join(timeout=5)
        return self.process.returncode


def wait_until(predicate, timeout: float, interval: float, workers: list[OldWorker]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if any(w.process.poll() is not None for w in workers):
            return False
        time.sleep(interval)
    return predicate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--poll", type=float, default=0.02)
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
    from oldbench.tasks import nap

    from django_i3tasks.models import TaskExecution, TaskExecutionTry

    workers = [OldWorker("heavy") for _ in range(args.workers)]
    result: dict = {"vendor": connection.vendor, "workers": args.workers}
    try:
        for worker in workers:
            worker.wait_ready()
        # Warm-up: one task through the workers (publisher channel, worker's first pull).
        nap.delay("warmup", 0.0)
        if not wait_until(lambda: TaskExecutionTry.objects.filter(is_success=True).exists(),
                          60, 0.05, workers):
            raise RuntimeError("0.1.9 worker did not run the warm-up task")
        TaskExecution.objects.all().delete()
        Effect.objects.all().delete()
        connection.close()

        started = time.time()
        for index in range(args.tasks):
            nap.delay(f"old-{index}", args.seconds)  # awaits each publish (0.1.9's enqueue)
        enqueued = time.time()

        done = wait_until(
            lambda: TaskExecutionTry.objects.filter(is_success=True).count() >= args.tasks,
            args.timeout, args.poll, workers,
        )
        seen = time.time()
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
