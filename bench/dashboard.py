"""The admin dashboard with 100,000 executions in its window: time and queries per page.

Run: ``.venv/bin/python bench/dashboard.py --db postgres`` (target: under 300 ms, at most
10 queries). It writes 100,000 executions with one finished try each (5 % failed, 20 tasks,
spread over the last hour, so both windows hold all of them) plus 1,000 pending ones, then
loads the page as a logged-in superuser: each window once to warm up, then ``RUNS`` times.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import main  # noqa: E402

EXECUTIONS = 100_000
RUNS = 7


def measure(db: str) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from django_i3tasks.models import TaskExecution, TaskExecutionTry

    rng = random.Random(7)
    now = timezone.now()
    executions, tries = [], []
    for i in range(EXECUTIONS):
        created = now - timedelta(seconds=rng.uniform(5, 3500))
        status = "failed" if i % 20 == 0 else "success"
        executions.append(TaskExecution(task_name=f"app.tasks.job_{i % 20}", queue_name="default",
                                        status=status, created_at=created,
                                        finished_at=created + timedelta(seconds=1)))
    for _ in range(1000):
        executions.append(TaskExecution(task_name="app.tasks.job_0", queue_name="default",
                                        status="pending", created_at=now - timedelta(minutes=3)))
    TaskExecution.objects.bulk_create(executions, batch_size=5000)
    for execution in executions[:EXECUTIONS]:
        started = execution.created_at + timedelta(seconds=rng.uniform(0.01, 0.5))
        tries.append(TaskExecutionTry(
            execution_id=execution.pk, task_name=execution.task_name, number=1,
            status=execution.status,
            enqueued_at=execution.created_at, not_before=execution.created_at,
            started_at=started, finished_at=started + timedelta(seconds=rng.expovariate(20))))
    TaskExecutionTry.objects.bulk_create(tries, batch_size=5000)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE")
    user = get_user_model().objects.create_superuser("bench", "b@example.com", "pw")
    client = Client()
    client.force_login(user)
    print(f"\n## {db} ({connection.vendor}): {EXECUTIONS:,} executions in the window, "
          f"{RUNS} loads per window; target < 300 ms, <= 10 queries")
    print("machine: {} cores, load average {:.2f} {:.2f} {:.2f}".format(
        os.cpu_count(), *os.getloadavg()))
    if os.environ.get("DASHBOARD_AB"):
        from django_i3tasks import stats

        since = timezone.now() - timedelta(hours=1)
        sides: dict[str, list[float]] = {"one pass": [], "three queries": []}
        for _ in range(RUNS):
            began = time.perf_counter()
            stats.window_tries(since, False)
            sides["one pass"].append(time.perf_counter() - began)
            began = time.perf_counter()
            stats.finished_tries(since)
            stats.finished_tries(since, per_task=True)
            stats.timings(since)
            sides["three queries"].append(time.perf_counter() - began)
        for name, times in sides.items():
            print(f"try figures, {name}: median {statistics.median(times) * 1000:.0f} ms")
    for window in ("1h", "24h"):
        client.get("/admin/django_i3tasks/dashboard/", {"window": window})
        times, queries = [], []
        for _ in range(RUNS):
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                response = client.get("/admin/django_i3tasks/dashboard/", {"window": window})
                times.append(time.perf_counter() - began)
            assert response.status_code == 200
            queries.append(len(captured))
        sql = [sum(float(q["time"]) for q in captured.captured_queries)]
        print(f"window {window}: median {statistics.median(times) * 1000:.0f} ms, "
              f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; "
              f"{max(queries)} queries (last load: {sql[0] * 1000:.0f} ms in SQL)")
        if os.environ.get("DASHBOARD_SQL"):
            for query in captured.captured_queries:
                print(f"  {float(query['time']) * 1000:6.0f} ms  {query['sql'][:150]}")


if __name__ == "__main__":
    main(__file__, __doc__.splitlines()[0], measure)
