"""How late ``wait_result()`` sees a result: polling (what it does) against PostgreSQL
LISTEN/NOTIFY (what it could do), and what each costs.

Run: ``.venv/bin/python bench/wait.py --db postgres`` (LISTEN/NOTIFY is measured there only).
A task is finished by another thread after a random 0.2-3 s; the waiter's lateness is the time
from the commit of the result to ``wait_result()`` returning. The LISTEN/NOTIFY figure is the
same measurement with a ``NOTIFY`` sent after the commit and a waiter blocked on its own
connection: the best such a design could do.
"""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import main  # noqa: E402

N = 20


def measure(db: str) -> None:
    from django.db import connection, connections
    from django.test.utils import CaptureQueriesContext

    from django_i3tasks import outbox
    from django_i3tasks.execution import run_message
    from tests.testapp import tasks

    class Collect(outbox.Outbox):
        def send(self, messages):  # type: ignore[no-untyped-def]
            sent.extend(messages)

    sent: list = []
    late, reads = [], []
    with outbox.use(Collect()):
        for _ in range(N):
            sent.clear()
            handle = tasks.add.delay(1, 2)
            message = sent[0]
            done: list[float] = []

            def finish(message=message, done=done) -> None:
                time.sleep(random.uniform(0.2, 3.0))
                run_message(message)
                done.append(time.monotonic())
                connections.close_all()

            worker = threading.Thread(target=finish)
            worker.start()
            with CaptureQueriesContext(connection) as captured:
                assert handle.wait_result(timeout=30) == 3
            seen = time.monotonic()
            worker.join()
            late.append(seen - done[0])
            reads.append(len(captured.captured_queries))
    print(f"\n## {db}: polling (50 ms growing x1.5 to 1 s), {N} waits of 0.2-3 s")
    print(f"lateness: median {statistics.median(late) * 1000:.0f} ms, "
          f"max {max(late) * 1000:.0f} ms; reads per wait: median {statistics.median(reads)}")
    if connection.vendor != "postgresql":
        return
    import psycopg

    params = connection.get_connection_params()
    listener = psycopg.connect(**params, autocommit=True)
    sender = psycopg.connect(**params, autocommit=True)
    listener.execute("LISTEN i3tasks_done")
    notify_late = []
    for _ in range(N):
        sent_at: list[float] = []

        def notify(sent_at=sent_at) -> None:
            time.sleep(random.uniform(0.2, 3.0))
            sender.execute("NOTIFY i3tasks_done, 'x'")
            sent_at.append(time.monotonic())

        thread = threading.Thread(target=notify)
        thread.start()
        for _note in listener.notifies(timeout=10, stop_after=1):
            break
        seen = time.monotonic()
        thread.join()
        notify_late.append(max(0.0, seen - sent_at[0]))
    listener.close()
    sender.close()
    print(f"LISTEN/NOTIFY lateness: median {statistics.median(notify_late) * 1000:.1f} ms, "
          f"max {max(notify_late) * 1000:.1f} ms; cost: one NOTIFY per finished execution "
          "(every task, waited for or not) and one held connection per waiter")


if __name__ == "__main__":
    main(__file__, __doc__.splitlines()[0], measure)
