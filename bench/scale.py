"""A year in production: every hot operation on an empty database and on a full one.

Run: ``.venv/bin/python bench/scale.py`` (10 million finished executions) or
``--rows 200000`` for a quick run; ``--reuse`` keeps a database filled by an earlier run of
the same size. PostgreSQL only, in its own database ``i3tasks_scale`` (dropped and created
again unless ``--reuse``); it starts its own Pub/Sub emulator.

The full database: ``--rows`` finished executions spread evenly over 30 days (2 % failed
with three failed tries, the rest succeeded with one try and a result), written with
``generate_series`` in chunks, then ``VACUUM ANALYZE`` (what autovacuum would have done in
production); plus 10,000 open executions of the last minutes (9,000 queued, 1,000 running).

Each operation is timed the same way on both databases, in the same run, and the table gives
the median of each and their ratio. Targets (issue 28): hot paths at most 1.2x empty; admin
pages under 300 ms; ``i3tasks_clean`` with no statement over 1 s, ``.delay()`` never blocked
over 100 ms while it runs (printed twice: the longest lock wait of ``.delay()``'s session, and
the slowest call by the clock, which also counts the machine being busy), at least 50,000
rows/s.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "i3tasks_scale"
EMPTY_NAME = "i3tasks_scale_empty"
OPEN = 10_000
SCHEDULES = 1_000
CHUNK = 500_000
HOT = (".delay()", "push (claim + record)", "beat, 1,000 schedules", "recovery sweep",
       "health endpoint", "status endpoint")
ADMIN = ("admin list, first page", "admin list, by status", "admin list, by task",
         "admin list, by date", "admin dashboard, 1 h", "admin dashboard, 24 h")


def fill_sql(first: int, last: int, total: int) -> list[str]:
    """Finished executions ``first..last`` of ``total``, evenly over the last 30 days."""
    return [
        f"""
        INSERT INTO django_i3tasks_taskexecution
          (uuid, task_name, queue_name, args, kwargs, status, max_retries, created_at,
           finished_at, has_next, unique_key)
        SELECT gen_random_uuid(), 'tests.testapp.tasks.job_' || (g % 20), 'default',
               jsonb_build_array(g, g), '{{}}'::jsonb,
               CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'success' END, 3,
               now() - interval '30 days' + (interval '30 days' * g / {total}),
               now() - interval '30 days' + (interval '30 days' * g / {total})
                 + interval '2 seconds',
               false, ''
        FROM generate_series({first}, {last}) AS g
        """,
        f"""
        INSERT INTO django_i3tasks_taskexecutiontry
          (execution_id, task_name, number, status, enqueued_at, not_before, started_at,
           finished_at, claims, error_type, error_message, traceback)
        SELECT e.id, e.task_name, n,
               CASE WHEN e.status = 'failed' THEN 'failed' ELSE 'success' END,
               e.created_at, e.created_at, e.created_at + interval '1 second',
               e.finished_at, 1,
               CASE WHEN e.status = 'failed' THEN 'ValueError' ELSE '' END,
               CASE WHEN e.status = 'failed' THEN 'bad input' ELSE '' END, ''
        FROM django_i3tasks_taskexecution e
        CROSS JOIN LATERAL generate_series(1, CASE WHEN e.status = 'failed' THEN 3 ELSE 1 END) n
        WHERE e.id BETWEEN {first} + 1000000000 AND {last} + 1000000000
        """,
        f"""
        INSERT INTO django_i3tasks_taskexecutionresult
          (execution_id, task_try_id, value, is_repr, created_at)
        SELECT t.execution_id, t.id, to_jsonb(t.execution_id), false, t.finished_at
        FROM django_i3tasks_taskexecutiontry t
        WHERE t.execution_id BETWEEN {first} + 1000000000 AND {last} + 1000000000
          AND t.status = 'success'
        """,
    ]


OPEN_SQL = f"""
INSERT INTO django_i3tasks_taskexecution
  (uuid, task_name, queue_name, args, kwargs, status, max_retries, created_at, has_next,
   unique_key)
SELECT gen_random_uuid(), 'tests.testapp.tasks.job_' || (g % 20), 'default',
       jsonb_build_array(g), '{{}}'::jsonb, 'pending', 3,
       now() - interval '5 minutes' * g / {OPEN}, false, ''
FROM generate_series(1, {OPEN}) AS g;
INSERT INTO django_i3tasks_taskexecutiontry
  (execution_id, task_name, number, status, enqueued_at, not_before, started_at,
   lease_expires_at, claims, error_type, error_message, traceback)
SELECT e.id, e.task_name, 1, CASE WHEN e.id % 10 = 0 THEN 'running' ELSE 'queued' END, e.created_at,
       e.created_at, CASE WHEN e.id % 10 = 0 THEN now() END,
       CASE WHEN e.id % 10 = 0 THEN now() + interval '1 hour' END, 0, '', '', ''
FROM django_i3tasks_taskexecution e
WHERE e.status = 'pending' AND NOT EXISTS (
  SELECT 1 FROM django_i3tasks_taskexecutiontry t WHERE t.execution_id = e.id);
"""


REFRESH_OPEN_SQL = """
UPDATE django_i3tasks_taskexecutiontry t SET not_before = now() - interval '1 minute',
  enqueued_at = now() - interval '1 minute', republished_at = NULL,
  lease_expires_at = CASE WHEN t.status = 'running' THEN now() + interval '1 hour' END
FROM django_i3tasks_taskexecution e
WHERE e.id = t.execution_id AND e.status = 'pending' AND t.status IN ('queued', 'running');
UPDATE django_i3tasks_taskexecution SET created_at = now() - interval '1 minute'
WHERE status = 'pending';
"""


def create_databases(reuse: bool) -> None:
    """The two databases: ``i3tasks_scale`` (filled) and ``i3tasks_scale_empty``."""
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                         autocommit=True) as conn:
        names = (EMPTY_NAME,) if reuse else (EMPTY_NAME, DB_NAME)
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        if reuse and not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                      (DB_NAME,)).fetchone():
            conn.execute(f"CREATE DATABASE {DB_NAME}")


def use(name: str) -> None:
    """Point Django at database ``name`` (and forget what the beat cached of the other)."""
    from django.db import connection, connections

    from django_i3tasks import beat

    connections.close_all()
    connection.settings_dict["NAME"] = name
    beat.forget(keep_state=True)


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)] if samples else 0.0


def timed(fn: Callable[[], object], times: int) -> list[float]:
    out = []
    for _ in range(times):
        began = time.perf_counter()
        fn()
        out.append(time.perf_counter() - began)
    return out


class Bench:
    def __init__(self) -> None:
        from django.contrib.auth.models import User
        from django.test import Client

        from django_i3tasks import beat
        from django_i3tasks.types import Schedule

        self.client = Client()
        user = User.objects.filter(username="scale").first() or User.objects.create_superuser(
            "scale", "scale@example.com", "scale")
        self.client.force_login(user)
        pool = [f"{m} * * * *" for m in range(0, 60, 3)]
        pool += [f"{m} {h} * * *" for m, h in zip(range(0, 60, 3), range(20), strict=True)]
        pool += [f"{k}-59/5 * * * *" for k in range(5)] + ["* * * * *"]
        self.schedules = tuple(
            Schedule("tests.testapp.beat_tasks", "tick", pool[i % len(pool)], [i],
                     name=f"scale-{i}") for i in range(SCHEDULES))
        self.minute = datetime.now(dt_timezone.utc).replace(second=0, microsecond=0)
        beat.forget()

    def measure(self, times: int) -> dict[str, list[float]]:
        from django.conf import settings
        from django.utils import timezone

        from django_i3tasks import beat, outbox, transport
        from django_i3tasks.messages import TaskMessage
        from django_i3tasks.models import TaskExecution
        from tests.helpers import push_envelope
        from tests.testapp import tasks

        figures: dict[str, list[float]] = {}
        tasks.add.delay(0, 0)
        transport.flush()
        handles = []
        samples = timed(lambda: handles.append(tasks.add.delay(1, 2)), times)
        figures[".delay()"] = samples
        transport.flush()

        with outbox.use(outbox.RecordingOutbox()):
            fresh = [tasks.add.delay(i, i) for i in range(times)]
        bodies = []
        for handle in fresh:
            execution = TaskExecution.objects.get(pk=handle.id)
            first = execution.tries.get()
            data, attributes = TaskMessage.of(execution, first.pk, first.number).encode()
            bodies.append(push_envelope(data, attributes))

        def push() -> None:
            response = self.client.post("/i3/tasks-push/", bodies.pop(),
                                        content_type="application/json")
            assert response.status_code == 200, response.content

        figures["push (claim + record)"] = timed(push, times)

        base = settings.I3TASKS
        settings.I3TASKS = dataclasses.replace(base, schedules=self.schedules)
        try:
            beat.forget(keep_state=True)

            def beat_call() -> None:
                self.minute += timedelta(minutes=1)
                beat.run_beat(self.minute, now=timezone.now())

            beat_call()  # the first call of a process computes every schedule's state
            figures["beat, 1,000 schedules"] = timed(beat_call, 6)
        finally:
            settings.I3TASKS = base
        transport.flush()
        figures["recovery sweep"] = timed(lambda: beat.recover_lost(timezone.now()),
                                          max(times // 4, 10))

        def get(url: str) -> Callable[[], None]:
            def call() -> None:
                response = self.client.get(url)
                assert response.status_code == 200, (url, response.status_code)
            return call

        figures["health endpoint"] = timed(get("/i3/tasks-health/"), max(times // 4, 10))
        uuids = [str(h.uuid) for h in handles]
        figures["status endpoint"] = timed(
            lambda: get(f"/i3/tasks-status/{uuids.pop()}/")(), len(uuids))

        admin = "/admin/django_i3tasks/taskexecution/"
        day = (timezone.now() - timedelta(days=10)).replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
        pages = {
            "admin list, first page": admin,
            "admin list, by status": admin + "?status__exact=failed",
            "admin list, by task": admin + "?task_name=tests.testapp.tasks.job_7",
            "admin list, by date": admin + "?" + urlencode(
                {"created_at__gte": str(day), "created_at__lt": str(day + timedelta(days=1))}),
        }
        dashboard = "/admin/django_i3tasks/dashboard/"
        pages["admin dashboard, 1 h"] = dashboard + "?window=1h"
        pages["admin dashboard, 24 h"] = dashboard + "?window=24h"
        for name, url in pages.items():
            get(url)()  # templates compiled, caches warm
            figures[name] = timed(get(url), 3)
        return figures


def fill(rows: int) -> None:
    from django.db import connection

    print(f"filling: {rows:,} finished executions over 30 days, {OPEN:,} open ...", flush=True)
    began = time.perf_counter()
    with connection.cursor() as cursor:
        # The ids of the filled rows start at 1,000,000,001, so the fill can address its own.
        cursor.execute("SELECT setval(pg_get_serial_sequence('django_i3tasks_taskexecution', "
                       "'id'), 1000000000)")
        cursor.execute("SET session_replication_role = replica")  # no FK triggers while filling
        for first in range(1, rows + 1, CHUNK):
            last = min(first + CHUNK - 1, rows)
            for sql in fill_sql(first, last, rows):
                cursor.execute(sql)
            print(f"  {last:,} rows, {time.perf_counter() - began:.0f} s", flush=True)
        cursor.execute(OPEN_SQL)
        cursor.execute("SET session_replication_role = origin")
        for table in ("taskexecution", "taskexecutiontry", "taskexecutionresult"):
            cursor.execute(f"VACUUM ANALYZE django_i3tasks_{table}")
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    print(f"filled in {time.perf_counter() - began:.0f} s; database size {size}", flush=True)


def clean_child(days: int) -> None:
    """``--clean-child DAYS``: run ``i3tasks_clean``'s two steps (delete, then VACUUM) in this
    process, as a cron job would beside the web processes, and print their figures as JSON."""
    import json

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_i3tasks import maintenance

    use(DB_NAME)
    with CaptureQueriesContext(connection) as captured:
        began = time.perf_counter()
        deleted = maintenance.clean(days)
        deleting = time.perf_counter() - began
    statements = sorted(captured.captured_queries, key=lambda q: float(q["time"]))
    began = time.perf_counter()
    maintenance.vacuum()
    vacuuming = time.perf_counter() - began
    print(json.dumps({"deleted": deleted, "deleting": deleting, "vacuuming": vacuuming,
                      "statements": len(statements),
                      "slowest": float(statements[-1]["time"]) if statements else 0.0,
                      "slowest_sql": " ".join(statements[-1]["sql"].split())[:90]
                      if statements else ""}))


def clean_run(rows: int) -> dict[str, Any]:
    """``i3tasks_clean`` removing the oldest 3 days of history (a tenth of a fresh fill), in
    a process of its own, while a thread here calls ``.delay()`` every 20 ms; the longest
    statement and the longest ``.delay()``, beside the longest ``.delay()`` of as long a loop
    without the clean-up.

    What a slow ``.delay()`` waited on is read off its database session: another connection
    samples the session's ``pg_stat_activity`` row every 5 ms, in both loops. A ``Lock`` wait
    is the clean-up holding something ``.delay()`` needs (blocked); an ``IO`` or ``LWLock``
    wait is a resource they share, such as the write-ahead log's flush; ``idle`` is time in
    the client process."""
    import json
    import subprocess

    import psycopg
    from django.db import connections
    from django.db.models import Min
    from django.utils import timezone

    from django_i3tasks import transport
    from django_i3tasks.models import TaskExecution, TaskExecutionResult, TaskExecutionTry
    from tests.testapp import tasks

    def counts() -> int:
        return sum(m.objects.count() for m in (TaskExecution, TaskExecutionTry,
                                               TaskExecutionResult))

    oldest = TaskExecution.objects.filter(status="success").aggregate(t=Min("finished_at"))["t"]
    days = max(0, (timezone.now() - oldest).days - 3)
    print(f"\ni3tasks_clean --days {days} (the oldest 3 days) on the full database, "
          "in a process of its own:", flush=True)
    before_exec, before = TaskExecution.objects.count(), counts()
    stop = threading.Event()
    calls: list[tuple[float, float]] = []  # (start, duration) of each .delay()
    session: list[int] = []  # the loop's backend pid
    samples: list[tuple[float, str, str]] = []  # (time, "wait_event_type:wait_event", state)

    def delay_loop() -> None:
        from django.db import connection as loop_connection
        try:
            while not stop.is_set():
                began = time.perf_counter()
                tasks.add.delay(3, 4)
                calls.append((began, time.perf_counter() - began))
                if not session:
                    session.append(loop_connection.connection.info.backend_pid)
                time.sleep(0.02)
        finally:
            connections.close_all()

    def sample_loop() -> None:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                             autocommit=True) as watcher:
            while not stop.is_set():
                if session:
                    row = watcher.execute(
                        "SELECT coalesce(wait_event_type || ':' || wait_event, ''), "
                        "coalesce(state, '') "
                        "FROM pg_stat_activity WHERE pid = %s", session).fetchone()
                    if row:
                        samples.append((time.perf_counter(), *row))
                time.sleep(0.005)

    def start_loops() -> list[threading.Thread]:
        session.clear()
        threads = [threading.Thread(target=delay_loop), threading.Thread(target=sample_loop)]
        for started in threads:
            started.start()
        return threads

    def blocked() -> dict[str, Any]:
        """The longest run of ``Lock`` samples, and what the session was doing during the
        calls over 50 ms (share of their samples: waiting for the client, waiting on a lock,
        on I/O or another wait, or running)."""
        longest = run = 0.0
        for (before, _, _), (at, kind, _) in itertools.pairwise(samples):
            run = run + (at - before) if kind.startswith("Lock:") else 0.0
            longest = max(longest, run)
        slow = [(began, took) for began, took in calls if took > 0.05]
        seen = collections.Counter(
            "idle" if state == "idle" else (kind or "running")
            for began, took in slow for at, kind, state in samples
            if began <= at <= began + took)
        total = sum(seen.values())
        spent = ", ".join(f"{what} {n * 100 / total:.0f} %" for what, n in seen.most_common())
        return {"longest": longest * 1000, "slow": len(slow),
                "spent": f"{spent or '-'} ({total} samples)"}

    threads = start_loops()
    time.sleep(0.5)
    child = subprocess.run([sys.executable, __file__, "--clean-child", str(days)],
                           capture_output=True, text=True, check=True, env=os.environ)
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    time.sleep(0.3)
    stop.set()
    for started in threads:
        started.join()
    during, waits_during = [took for _, took in calls], blocked()
    removed_exec = before_exec - TaskExecution.objects.count() + len(during)
    removed = before - counts() + len(during) * 2  # the delay loop added 2 rows per call
    elapsed = figures["deleting"]
    # The same loop for as long without the clean-up: this machine's own worst case.
    calls.clear()
    samples.clear()
    stop.clear()
    threads = start_loops()
    time.sleep(min(elapsed, 60.0))
    stop.set()
    for started in threads:
        started.join()
    alone, delays, waits_alone = [took for _, took in calls], during, blocked()
    transport.flush()
    print(f"  slowest statement: {figures['slowest_sql']}")
    return {"executions removed": removed_exec, "rows removed": removed, "seconds": elapsed,
            "executions/s": removed_exec / elapsed if elapsed else 0.0,
            "rows/s": removed / elapsed if elapsed else 0.0,
            "slowest statement (s)": figures["slowest"], "statements": figures["statements"],
            "VACUUM (ANALYZE) afterwards (s)": figures["vacuuming"],
            "slowest .delay() during clean (ms)": max(delays, default=0) * 1000,
            "p99 .delay() during clean (ms)": p99(delays) * 1000,
            "median .delay() during clean (ms)": statistics.median(delays) * 1000
            if delays else 0.0, ".delay() calls during clean": len(delays),
            "longest lock wait during clean (ms)": waits_during["longest"],
            "slow .delay() (> 50 ms) during clean": waits_during["slow"],
            "  their session, during": waits_during["spent"],
            "slowest .delay() without clean (ms)": max(alone, default=0) * 1000,
            "p99 .delay() without clean (ms)": p99(alone) * 1000,
            "median .delay() without clean (ms)": statistics.median(alone) * 1000
            if alone else 0.0,
            "longest lock wait without clean (ms)": waits_alone["longest"],
            "slow .delay() (> 50 ms) without clean": waits_alone["slow"],
            "  their session, without": waits_alone["spent"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--times", type=int, default=200,
                        help="samples per hot operation and database")
    parser.add_argument("--rounds", type=int, default=4,
                        help="the two databases take turns this many times")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the full database of an earlier run of the same size")
    parser.add_argument("--clean-child", type=int, metavar="DAYS", help=argparse.SUPPRESS)
    options = parser.parse_args()
    os.environ["I3TASKS_TEST_DB"] = "postgres"
    os.environ["I3TASKS_TEST_DB_NAME"] = DB_NAME
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    sys.path.insert(0, str(ROOT))
    if options.clean_child is not None:
        import django

        django.setup()
        clean_child(options.clean_child)
        return
    from django_i3tasks.testing.emulator import PubSubEmulator

    create_databases(options.reuse)
    emulator = PubSubEmulator().start()
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.endpoint
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection

        from django_i3tasks.models import TaskExecution
        from django_i3tasks.provisioning import ensure_pubsub

        # Nothing runs the tasks the benchmark enqueues (no push endpoint): a run longer than
        # the default 600 s would leave its own early tasks for the sweep, on one database.
        settings.I3TASKS = dataclasses.replace(settings.I3TASKS, recovery_after_seconds=7200)
        ensure_pubsub()
        print(f"# bench/scale.py: {options.rows:,} finished executions; machine: "
              f"{os.cpu_count()} cores, load average "
              "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
        benches = {}
        for name in (EMPTY_NAME, DB_NAME):
            use(name)
            call_command("migrate", verbosity=0)
            benches[name] = Bench()
        filled = options.reuse and TaskExecution.objects.filter(
            pk__gt=1_000_000_000).count() >= options.rows // 2
        if filled:
            print(f"reusing the filled database {DB_NAME}", flush=True)
            with connection.cursor() as cursor:  # its open work is of the last minutes again
                cursor.execute(REFRESH_OPEN_SQL)
        else:
            fill(options.rows)
        samples: dict[str, dict[str, list[float]]] = {EMPTY_NAME: {}, DB_NAME: {}}
        per_round = max(options.times // options.rounds, 10)
        for round_ in range(options.rounds):
            # Turns alternate which database goes first: this machine's speed drifts.
            order = (EMPTY_NAME, DB_NAME) if round_ % 2 == 0 else (DB_NAME, EMPTY_NAME)
            for name in order:
                use(name)
                if round_ == 0:
                    benches[name].measure(10)  # warm up: imports, templates, caches
                for key, values in benches[name].measure(per_round).items():
                    samples[name].setdefault(key, []).extend(values)
            print(f"  round {round_ + 1} of {options.rounds} done", flush=True)
        use(DB_NAME)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_i3tasks_taskexecution")
            executions = cursor.fetchone()[0]
        print(f"\nfull database: {executions:,} executions; median of {options.rounds} rounds "
              "taken in turns with the empty database")
        print(f"\n{'operation':<28}{'empty (ms)':>12}{'full (ms)':>12}{'ratio':>8}  target")
        for name in (*HOT, *ADMIN):
            e = statistics.median(samples[EMPTY_NAME][name])
            f = statistics.median(samples[DB_NAME][name])
            if name in HOT:
                target = "<= 1.2x " + ("ok" if f / e <= 1.2 else "MISSED")
            else:
                target = "< 300 ms " + ("ok" if f < 0.3 else "MISSED")
            print(f"{name:<28}{e * 1000:12.2f}{f * 1000:12.2f}{f / e:8.2f}  {target}")
        cleaned = clean_run(options.rows)
        for key, value in cleaned.items():
            print(f"  {key:<38}{value:,.3f}" if isinstance(value, float)
                  else f"  {key:<38}{value:,}" if isinstance(value, int)
                  else f"  {key:<38}{value}")
        verdicts = {
            "statement <= 1 s": cleaned["slowest statement (s)"] <= 1.0,
            ">= 50,000 rows/s": cleaned["rows/s"] >= 50_000,
            ".delay() blocked (lock wait) <= 100 ms":
                cleaned["longest lock wait during clean (ms)"] <= 100,
            "slowest .delay() (wall) <= 100 ms":
                cleaned["slowest .delay() during clean (ms)"] <= 100,
        }
        print("  targets: " + "; ".join(f"{name} {'ok' if met else 'MISSED'}"
                                        for name, met in verdicts.items()))
    finally:
        from django_i3tasks import transport

        transport.flush()
        emulator.stop()


if __name__ == "__main__":
    main()
