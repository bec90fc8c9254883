"""Celery in ``bench/compare.py``: three rows, each run with both pools, best kept per
workload (both recorded).

- ``celery-redis``: Redis broker, results in Redis.
- ``celery-db``: Redis broker, results in the same database (django-celery-results).
- ``celery-db-safe``, "Celery with our guarantees": results in the database,
  ``task_acks_late`` and ``task_reject_on_worker_lost`` (a task is acknowledged after it ran
  and given back when its worker process dies), and a broker that keeps its data on disk
  (a second redis-server, ``appendonly yes``, ``appendfsync everysec``).

Every worker: ``-c 8``, ``--pool prefork`` or ``--pool threads``; the prefetch multiplier per
Celery's Optimizing guide (many short tasks: large; tasks that take time: small);
``CELERY_DB_REUSE_MAX`` set so that Celery's Django fixup keeps the database connections
instead of closing them around every task (``compare_project/settings.py``).

Completion is detected as for every system: one COUNT every ``POLL`` seconds (database
results: one ``SELECT count(*)``; Redis results: one ``EXISTS`` of all result keys), the end
time being the last ``date_done`` Celery recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

CONCURRENCY = 8
POOLS = ("prefork", "threads")
#: Celery's Optimizing guide: a large multiplier for many short tasks, a small one for tasks
#: that take time (the 50 ms tasks are 8 at once and 200 in all: 4, Celery's default).
PREFETCH = {"noop": 64, "fanout": 64, "sleep": 4}
ROWS = {
    "celery-redis": {"results": "redis", "safe": False},
    "celery-db": {"results": "db", "safe": False},
    "celery-db-safe": {"results": "db", "safe": True},
}


def settings_of(row: str, durable_url: str | None) -> dict[str, Any]:
    spec = ROWS[row]
    return {
        "broker": durable_url if spec["safe"] else "system Redis (RDB snapshots as configured)",
        "broker persistence": "appendonly yes, appendfsync everysec" if spec["safe"]
        else "as the system Redis is configured (see versions)",
        "result_backend": "django-db (django-celery-results)" if spec["results"] == "db"
        else "redis",
        "pools": f"prefork and threads, -c {CONCURRENCY}; the better one per workload",
        "prefetch_multiplier": PREFETCH,
        "task_acks_late": spec["safe"], "task_reject_on_worker_lost": spec["safe"],
        "CELERY_DB_REUSE_MAX": 1_000_000,
        "CONN_MAX_AGE": 60,
        "worker flags": "--without-gossip --without-mingle --without-heartbeat",
    }


def app_for(row: str, broker: str) -> Any:
    from celery import Celery
    from django.conf import settings

    app = Celery("compare_project", set_as_current=True)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = broker
    app.conf.result_backend = "django-db" if ROWS[row]["results"] == "db" \
        else settings.REDIS_URL
    import compare_project.celery_tasks  # noqa: F401 - registers the shared tasks

    app.finalize()
    return app


def worker(spawn: Callable[..., subprocess.Popen], row: str, pool: str, prefetch: int,
           broker: str) -> subprocess.Popen:
    spec = ROWS[row]
    return spawn([sys.executable, "-m", "celery", "-A", "compare_project.celery_app",
                  "worker", "--pool", pool, "-c", str(CONCURRENCY), "-Q", "celery",
                  "-l", "warning", "--without-gossip", "--without-mingle",
                  "--without-heartbeat"],
                 extra={"CMP_CELERY_RESULTS": spec["results"], "CMP_CELERY_BROKER": broker,
                        "CMP_CELERY_PREFETCH": str(prefetch),
                        "CMP_CELERY_SAFE": "1" if spec["safe"] else "0"})


def _timestamp(value: Any) -> float:
    import datetime as dt

    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


class Results:
    """Where one row's results are, counted in one round trip."""

    def __init__(self, app: Any, row: str) -> None:
        self.app, self.db = app, ROWS[row]["results"] == "db"

    def clear(self) -> None:
        if self.db:
            from django_celery_results.models import TaskResult

            TaskResult.objects.all().delete()

    def count(self, ids: list[str]) -> int:
        if self.db:
            from django_celery_results.models import TaskResult

            return TaskResult.objects.filter(status="SUCCESS").count()
        backend = self.app.backend
        return backend.client.exists(*[backend.get_key_for_task(i) for i in ids])

    def last_done(self, ids: list[str]) -> float:
        if self.db:
            from django.db.models import Max
            from django_celery_results.models import TaskResult

            return _timestamp(TaskResult.objects.filter(status="SUCCESS").aggregate(
                last=Max("date_done"))["last"])
        backend = self.app.backend
        raw = backend.client.mget([backend.get_key_for_task(i) for i in ids])
        return max(_timestamp(json.loads(item)["date_done"]) for item in raw)


def _poll(predicate: Callable[[], bool], every: float, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def throughput(app: Any, row: str, name: str, n: int, every: float,
               args: tuple = ()) -> float:
    task = app.tasks[f"compare_project.celery_tasks.{name}"]
    results = Results(app, row)
    results.clear()
    started = time.time()
    ids = [task.delay(index, *args).id for index in range(n)]
    _poll(lambda: results.count(ids) >= n, every, f"{n} Celery {name} tasks")
    return n / (results.last_done(ids) - started)


def fanout(app: Any, row: str, n: int, every: float) -> tuple[float, float]:
    from celery import chord

    noop = app.tasks["compare_project.celery_tasks.noop"]
    join = app.tasks["compare_project.celery_tasks.join"]
    results = Results(app, row)
    results.clear()
    started = time.time()
    result = chord(noop.s(i) for i in range(n))(join.s())
    enqueued = time.time() - started
    if results.db:
        from django_celery_results.models import TaskResult

        joined = TaskResult.objects.filter(task_id=result.id, status="SUCCESS")
        _poll(joined.exists, every, "the chord callback")
        return enqueued, _timestamp(joined.get().date_done) - started
    _poll(lambda: results.count([result.id]) >= 1, every, "the chord callback")
    return enqueued, results.last_done([result.id]) - started


def latency(app: Any, n: int) -> list[float]:
    task = app.tasks["compare_project.celery_tasks.latency_noop"]
    latencies = []
    for index in range(n):
        began = time.perf_counter()
        task.delay(index)
        latencies.append(time.perf_counter() - began)
    return latencies


def bulk(app: Any, n: int) -> float:
    """1,000 tasks in one ``group(...).apply_async()``, to the queue nobody reads."""
    from celery import group

    task = app.tasks["compare_project.celery_tasks.latency_noop"]
    started = time.perf_counter()
    group(task.s(i) for i in range(n)).apply_async()
    return time.perf_counter() - started


def sql(app: Any) -> dict[str, int]:
    import uuid

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from harness import count

    with CaptureQueriesContext(connection) as captured:
        app.backend.mark_as_done(str(uuid.uuid4()), 1)
    return {"enqueue": 0, "execution": count(captured)[1]}
