"""What the Prometheus metrics cost per push execution: metrics on and off, in one run.

Run: ``.venv/bin/python bench/metrics.py`` (both databases) or ``--db sqlite|postgres``.
Each round enqueues a batch of ``add`` calls (messages collected, not published) and posts
each one to the push view in process (Django's test client: the view, the claim, the task,
the recording; no HTTP server). Rounds alternate between metrics off (receivers
disconnected) and on, so a drift of the machine's speed hits both sides alike. Printed:
wall and CPU time per execution (median of the rounds' means) and SQL statements per
execution, for each side, and the difference.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import count, main  # noqa: E402

ROUNDS = 10
PER_ROUND = 100


def measure(db: str) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from django_i3tasks import metrics, outbox
    from tests.helpers import push_envelope
    from tests.testapp import tasks

    class Collect(outbox.Outbox):
        def send(self, messages):
            sent.extend(messages)

    sent: list = []
    client = Client()

    def one_round(enabled: bool) -> tuple[float, float, float]:
        (metrics.connect if enabled else metrics.disconnect)()
        sent.clear()
        with outbox.use(Collect()):
            for i in range(PER_ROUND):
                tasks.add.delay(i, 1)
        bodies = [push_envelope(*m.encode()) for m in sent]
        statements = []
        wall, cpu = time.perf_counter(), time.process_time()
        for body in bodies:
            with CaptureQueriesContext(connection) as captured:
                response = client.post("/i3/tasks-push/", body,
                                       content_type="application/json")
            assert response.status_code == 200, response.content
            statements.append(count(captured)[1])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall / PER_ROUND, cpu / PER_ROUND, statistics.mean(statements)

    if not metrics.available():
        raise SystemExit('prometheus-client is missing: pip install "django-i3tasks[metrics]"')
    one_round(True)
    one_round(False)  # warm-up
    results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for i in range(ROUNDS * 2):
        enabled = bool(i % 2)
        results[enabled].append(one_round(enabled))
    metrics.connect()
    print(f"\n## {db} ({connection.vendor}): {ROUNDS} rounds of {PER_ROUND} push executions "
          "per side, interleaved")
    side = {}
    for enabled in (False, True):
        rows = results[enabled]
        side[enabled] = (statistics.median(r[0] for r in rows),
                         statistics.median(r[1] for r in rows),
                         statistics.mean(r[2] for r in rows))
        wall, cpu, sql = side[enabled]
        print(f"metrics {'on ' if enabled else 'off'}: {wall * 1000:.3f} ms wall, "
              f"{cpu * 1000:.3f} ms CPU, {sql:.1f} SQL statements per execution")
    print(f"cost of metrics per execution: {(side[True][0] - side[False][0]) * 1000:+.3f} ms "
          f"wall, {(side[True][1] - side[False][1]) * 1000:+.3f} ms CPU, "
          f"{side[True][2] - side[False][2]:+.1f} statements")


if __name__ == "__main__":
    main(__file__, __doc__.splitlines()[0], measure)
