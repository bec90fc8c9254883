"""The durable peers of ``bench/compare.py``: queues that write a row per task, as ours
does, so that their enqueue is as durable as ours. What a Django team on PostgreSQL would
pick instead of us:

- ``procrastinate`` (PostgreSQL only): its own worker, ``--concurrency 8``, LISTEN/NOTIFY on
  (its default), a connection pool in the worker and in the enqueuing process.
- ``django-tasks`` with the ``django-tasks-db`` database backend: its ``db_worker`` runs one
  task at a time, so the budget of 8 is 8 ``db_worker`` processes (its documented way to
  scale), each polling every 0.1 s when idle (``--interval``; 1 s by default) and keeping its
  connection (``CONN_MAX_AGE``, which ``db_worker`` honours through
  ``close_old_connections``).

Completion is detected as for every system: one COUNT of finished rows every
``POLL`` seconds; the end time is the last finish time the system recorded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

CONCURRENCY = 8
DB_WORKER_INTERVAL = 0.1


def _poll(predicate: Callable[[], bool], every: float, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def _timed(calls: Callable[[int], Any], n: int) -> list[float]:
    latencies = []
    for index in range(n):
        began = time.perf_counter()
        calls(index)
        latencies.append(time.perf_counter() - began)
    return latencies


# --- procrastinate --------------------------------------------------------------------------


class Procrastinate:
    name = "procrastinate"
    settings = {
        "worker": f"procrastinate worker --concurrency {CONCURRENCY} (one process, jobs run "
                  "in threads: the tasks are synchronous)",
        "listen_notify": "on (default): a deferred job wakes the worker at once",
        "fetch_job_polling_interval": "5 s (default; only a fallback to LISTEN/NOTIFY)",
        "connections": "PsycopgConnector: a psycopg_pool pool in the worker and the driver",
        "delete_jobs": "never (default): finished jobs stay, as our rows do",
        "bulk enqueue": "Task.batch_defer (one INSERT of all jobs)",
        "fan-out": "no join primitive: 1,000 jobs by batch_defer, time to the last one",
    }

    def __init__(self, spawn: Callable[..., subprocess.Popen], poll_every: float) -> None:
        from compare_project import procrastinate_app

        self.module = procrastinate_app
        self.app = procrastinate_app.app
        self.spawn, self.every = spawn, poll_every
        self.app.open()
        self.app.schema_manager.apply_schema()

    def _sql(self, query: str) -> Any:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchone() if cursor.description else None

    def clear(self) -> None:
        self._sql("TRUNCATE procrastinate_events, procrastinate_jobs CASCADE")

    def worker(self) -> subprocess.Popen:
        return self.spawn([sys.executable, "-m", "procrastinate",
                           "--app=compare_project.procrastinate_app.app", "worker",
                           "--queues=default", f"--concurrency={CONCURRENCY}"])

    def done(self) -> int:
        return self._sql("SELECT count(*) FROM procrastinate_jobs "
                         "WHERE status = 'succeeded' AND queue_name = 'default'")[0]

    def _end(self) -> float:
        return self._sql("SELECT max(at) FROM procrastinate_events "
                         "WHERE type = 'succeeded'")[0].timestamp()

    def throughput(self, n: int, seconds: float | None = None) -> float:
        self.clear()
        started = time.time()
        for index in range(n):
            if seconds is None:
                self.module.noop.defer(index=index)
            else:
                self.module.nap.defer(index=index, seconds=seconds)
        _poll(lambda: self.done() >= n, self.every, f"{n} procrastinate jobs")
        return n / (self._end() - started)

    def bulk(self, n: int) -> float:
        """1,000 jobs in one call, to the queue nobody reads."""
        started = time.perf_counter()
        self.module.latency_noop.batch_defer(*({"index": i} for i in range(n)))
        return time.perf_counter() - started

    def fanout(self, n: int) -> tuple[float, float]:
        self.clear()
        started = time.time()
        self.module.noop.batch_defer(*({"index": i} for i in range(n)))
        enqueued = time.time() - started
        _poll(lambda: self.done() >= n, self.every, "the procrastinate fan-out")
        return enqueued, self._end() - started

    def latency(self, n: int) -> list[float]:
        return _timed(lambda i: self.module.latency_noop.defer(index=i), n)

    def close(self) -> None:
        self.app.close()


# --- django-tasks, database backend ----------------------------------------------------------


class DjangoTasksDB:
    name = "django-tasks-db"
    settings = {
        "backend": "django_tasks_db.DatabaseBackend (TASKS['default'])",
        "worker": f"{CONCURRENCY} x manage.py db_worker (it runs one task at a time) "
                  f"--interval {DB_WORKER_INTERVAL} --no-startup-delay",
        "connections": "CONN_MAX_AGE=60 (db_worker calls close_old_connections, which honours it)",
        "bulk enqueue": "no bulk API: 1,000 Task.enqueue() in one transaction.atomic()",
        "fan-out": "no join primitive: 1,000 tasks enqueued in one transaction, time to the "
                   "last one",
    }

    def __init__(self, spawn: Callable[..., subprocess.Popen], poll_every: float) -> None:
        from compare_project import peer_tasks

        self.tasks = peer_tasks
        self.spawn, self.every = spawn, poll_every

    def clear(self) -> None:
        from django_tasks_db.models import DBTaskResult

        DBTaskResult.objects.all().delete()

    def worker(self) -> list[subprocess.Popen]:
        return [self.spawn([sys.executable, "-m", "django", "db_worker", "--queue-name",
                            "default", "--interval", str(DB_WORKER_INTERVAL),
                            "--no-startup-delay", "--no-reload", "--verbosity", "0"])
                for _ in range(CONCURRENCY)]

    def _done(self) -> Any:
        from django_tasks_db.models import DBTaskResult

        return DBTaskResult.objects.filter(status="SUCCESSFUL", queue_name="default")

    def done(self) -> int:
        return self._done().count()

    def _end(self) -> float:
        from django.db.models import Max

        return self._done().aggregate(last=Max("finished_at"))["last"].timestamp()

    def throughput(self, n: int, seconds: float | None = None) -> float:
        self.clear()
        started = time.time()
        for index in range(n):
            if seconds is None:
                self.tasks.noop.enqueue(index)
            else:
                self.tasks.nap.enqueue(index, seconds)
        _poll(lambda: self.done() >= n, self.every, f"{n} django-tasks tasks")
        return n / (self._end() - started)

    def _bulk(self, n: int, task: Any = None) -> None:
        from django.db import transaction

        task = task or self.tasks.noop
        with transaction.atomic():
            for index in range(n):
                task.enqueue(index)

    def bulk(self, n: int) -> float:
        """1,000 tasks in one transaction, to the queue nobody reads."""
        started = time.perf_counter()
        self._bulk(n, self.tasks.latency_noop)
        return time.perf_counter() - started

    def fanout(self, n: int) -> tuple[float, float]:
        self.clear()
        started = time.time()
        self._bulk(n)
        enqueued = time.time() - started
        _poll(lambda: self.done() >= n, self.every, "the django-tasks fan-out")
        return enqueued, self._end() - started

    def latency(self, n: int) -> list[float]:
        return _timed(lambda i: self.tasks.latency_noop.enqueue(i), n)

    def close(self) -> None:
        pass
