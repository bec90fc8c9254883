"""Fan-out: enqueueing a 1,000-member group in bulk and in a loop, SQL per member, and the
last member of a ``pass_results`` group (its callback gets the 1,000 values, read in one
query).

Run: ``.venv/bin/python bench/fanout.py`` (both databases) or ``--db sqlite|postgres``.
It starts its own Pub/Sub emulator. Enqueue times include publishing every message (the
publish futures are awaited), so both ways pay for the same work.

Baseline (the earlier public package, as stated in issue 3): 12 queries per member
execution, 14 for the last member.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import count, main  # noqa: E402

MEMBERS = 1000
REPEATS = 3
BASELINE_MEMBER = 12
BASELINE_LAST = 14


def measure(db: str) -> None:
    from django.db import connection
    from django.db.models import F
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from django_i3tasks import outbox, transport
    from django_i3tasks.execution import run_message
    from django_i3tasks.messages import TaskMessage
    from django_i3tasks.models import GroupStatus, TaskExecution, TaskGroup
    from django_i3tasks.provisioning import ensure_pubsub
    from tests.helpers import push_envelope
    from tests.testapp.chain_tasks import collect, link, member

    ensure_pubsub()
    member.delay(-1)  # warm up the publisher and the connection
    transport.flush()

    def enqueue(bulk: bool) -> float:
        group = TaskGroup.create(callback=link.build_chain("joined"), total_count=MEMBERS)
        started = time.perf_counter()
        with outbox.delivering(timeout=120) as delivery:
            if bulk:
                member.map(range(MEMBERS), group=group)
            else:
                for index in range(MEMBERS):
                    member.delay(index, __i3group__=group)
        assert not delivery.failed and delivery.published == MEMBERS
        return time.perf_counter() - started

    bulk_times = [enqueue(bulk=True) for _ in range(REPEATS)]
    loop_times = [enqueue(bulk=False) for _ in range(REPEATS)]

    # Queries per member execution through the push view, on the last group (loop-made).
    group = TaskGroup.objects.latest("pk")
    client = Client()
    counts = []
    members = TaskExecution.objects.filter(group=group).order_by("pk")
    for execution in members:
        message = TaskMessage.of(execution, *execution.tries.values_list("pk", "number").get())
        data, attributes = message.encode()
        body = push_envelope(data, attributes)
        with CaptureQueriesContext(connection) as captured:
            response = client.post("/i3/tasks-push/", body, content_type="application/json")
        assert response.status_code == 200 and response.json()["status"] == "success"
        counts.append(count(captured))
    group.refresh_from_db()
    assert group.status == GroupStatus.SUCCESS
    transport.flush()

    data = [c[1] for c in counts]
    totals = [c[0] for c in counts]
    bulk, loop = statistics.median(bulk_times), statistics.median(loop_times)
    print(f"\n## {db} ({connection.vendor}), {MEMBERS}-member group, median of {REPEATS}")
    print(f"enqueue, bulk (member.map):       {bulk * 1000:8.1f} ms  "
          f"({MEMBERS / bulk:,.0f} members/s)")
    print(f"enqueue, loop of .delay():        {loop * 1000:8.1f} ms  "
          f"({MEMBERS / loop:,.0f} members/s)")
    print(f"bulk is {loop / bulk:.1f}x faster")
    print(f"queries per member execution:    {max(data[:-1])} data statements "
          f"({max(totals[:-1])} with transaction control)   baseline: {BASELINE_MEMBER}")
    print(f"queries for the last member:     {data[-1]} data statements "
          f"({totals[-1]} with transaction control; releases the callback)   "
          f"baseline: {BASELINE_LAST}")

    # pass_results: the last member's push assembles the 1,000 values (one query) and hands
    # them to the callback in the same transaction.
    results_group = TaskGroup.create(callback=collect, total_count=MEMBERS, pass_results=True)
    member.map(range(MEMBERS), group=results_group)
    transport.flush()
    ordered = list(TaskExecution.objects.filter(group=results_group).order_by("position"))
    for execution in ordered[:-1]:
        run_message(TaskMessage.of(execution,
                                   *execution.tries.values_list("pk", "number").get()))
    last = ordered[-1]
    body = push_envelope(*TaskMessage.of(last, *last.tries.values_list("pk", "number").get())
                         .encode())
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        response = client.post("/i3/tasks-push/", body, content_type="application/json")
        took = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["status"] == "success"
    callback = TaskExecution.objects.get(pk=TaskGroup.objects.get(pk=results_group.pk)
                                         .callback_id)
    assert callback.status != "waiting" and callback.args == [list(range(MEMBERS))]
    transport.flush()

    query_times = []
    for _ in range(5):  # the assembling query alone (graph._release_callback's)
        started = time.perf_counter()
        values = list(TaskExecution.objects.filter(group=results_group)
                      .order_by(F("position").asc(nulls_last=True), "pk")
                      .values_list("result__value", flat=True))
        query_times.append(time.perf_counter() - started)
    assert values == list(range(MEMBERS))
    print(f"the {MEMBERS} values in member order, one query: "
          f"{statistics.median(query_times) * 1000:.1f} ms (median of 5)")
    print(f"last member, pass_results:       {count(captured)[1]} data statements, "
          f"{took * 1000:.1f} ms (assembles {MEMBERS} values in one query and releases "
          f"the callback)")


if __name__ == "__main__":
    main(__file__, __doc__.splitlines()[0], measure)
