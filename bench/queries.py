"""SQL queries per ``.delay()`` and per successful push execution, and what .delay() costs.

Run: ``.venv/bin/python bench/queries.py`` (both databases) or ``--db sqlite|postgres``.
It starts its own Pub/Sub emulator. Queries are counted with Django's
``CaptureQueriesContext``; transaction-control statements (BEGIN/SAVEPOINT/RELEASE) that
Django sends on SQLite are reported separately, since PostgreSQL sends them outside the
cursor and they are not captured there.

Baseline (the earlier public package, as stated in issue 2): 2 queries + a blocking publish
per ``.delay()``, 8 queries per push execution.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import count, main  # noqa: E402

BASELINE_DELAY = "2 + a blocking publish"
BASELINE_PUSH = 8
N = 200


def measure(db: str) -> None:
    from django.db import connection
    from django.test import Client as client_cls  # noqa: N813
    from django.test.utils import CaptureQueriesContext as capture  # noqa: N813

    from django_i3tasks import outbox, transport
    from django_i3tasks.messages import TaskMessage
    from django_i3tasks.models import TaskExecution
    from django_i3tasks.provisioning import ensure_pubsub
    from tests.helpers import push_envelope
    from tests.testapp import tasks

    ensure_pubsub()
    tasks.add.delay(0, 0)  # warm up the publisher and the connection
    transport.flush()

    delay_counts, delay_times, handles = [], [], []
    for i in range(N):
        with capture(connection) as captured:
            started = time.perf_counter()
            handles.append(tasks.add.delay(i, i))
            delay_times.append(time.perf_counter() - started)
        delay_counts.append(count(captured))
    transport.flush()

    blocking_times = []
    for i in range(N // 4):
        started = time.perf_counter()
        with outbox.delivering() as delivery:
            tasks.add.delay(i, -i)
        assert delivery.messages and not delivery.failed
        blocking_times.append(time.perf_counter() - started)

    client = client_cls()
    push_counts = []
    for handle in handles:
        execution = TaskExecution.objects.get(pk=handle.id)
        message = TaskMessage.of(execution, *execution.tries.values_list("pk", "number").get())
        data, attributes = message.encode()
        body = push_envelope(data, attributes)
        with capture(connection) as captured:
            response = client.post("/i3/tasks-push/", body, content_type="application/json")
        assert response.status_code == 200 and response.json()["status"] == "success", \
            response.content
        push_counts.append(count(captured))

    def summary(counts):
        totals = [c[0] for c in counts]
        data = [c[1] for c in counts]
        return (f"{max(data)} data statements (max; mean {statistics.mean(data):.2f}), "
                f"{max(totals)} with transaction control")

    print(f"\n## {db} ({connection.vendor}), {N} calls each")
    print(f".delay():          {summary(delay_counts)}   baseline: {BASELINE_DELAY}")
    print(f"push execution:    {summary(push_counts)}   baseline: {BASELINE_PUSH}")
    print(f".delay() time:     median {statistics.median(delay_times) * 1000:.2f} ms "
          f"(publish batched, not awaited)")
    print(f".delay() + blocking publish (what the baseline does): median "
          f"{statistics.median(blocking_times) * 1000:.2f} ms")


if __name__ == "__main__":
    main(__file__, __doc__.splitlines()[0], measure)
