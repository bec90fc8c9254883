"""Side by side: django-i3tasks against 0.1.9, Celery 5 + Redis, the transport ceiling and the
design's floor, same machine, same emulator, same database, one run.

Run: ``python bench/compare.py`` (both databases, several rounds; several minutes) or
``--quick`` (small counts, one round), ``--db sqlite|postgres|both``,
``--systems ours-push,ours-pull,...``, ``--workloads enqueue,noop,sleep,fanout,sql``.
It needs the ``bench`` extra (gunicorn, Celery, django-celery-results, matplotlib): when
Celery is missing it makes ``.venv-bench`` (``pip install -e .[test,bench]``) and runs itself
there. Redis must answer on 127.0.0.1:6379 (db 7 is flushed). The Django project of the run is
``bench/compare_project``; every process of a run reads the same database and settings.

Systems (each served with the same budget: 8 tasks at once on this 2-core machine):
- ``ours-push``: this checkout's push view under gunicorn, 2 workers x 4 threads, fed by the
  emulator's push subscription; ``ours-pull``: ``manage.py i3tasks_worker --concurrency 8``.
  Both with ``CONN_MAX_AGE=60`` (production settings); ``ours-push@0``/``ours-pull@0`` repeat
  the no-op workload with Django's default ``CONN_MAX_AGE=0``.
- ``old``: django-i3tasks 0.1.9 (its pull worker: one message at a time), in its own
  virtualenv (``bench/pull.py``'s); fewer tasks, since it is slow.
- ``celery-redis`` / ``celery-db``: Celery 5, Redis broker, ``--pool threads -c 8``, results
  in Redis / in the same database through django-celery-results.
- ``ceiling-push``: the same emulator pushing to a no-op view under the same gunicorn;
  ``ceiling-pull``: a streaming-pull subscriber (flow control 8) that only acknowledges.
- ``floor``: a plain Django view that parses the envelope, claims the try with one
  conditional UPDATE and records the result in one transaction, under the same gunicorn;
  its tasks are enqueued as ours are, one INSERT and one publish each.

Workloads: ``enqueue`` (latency of 1,000 calls, nobody consuming), ``noop`` (2,000 no-op
tasks, first enqueue to last recorded result), ``sleep`` (200 tasks of 50 ms), ``fanout``
(1,000 members and a join callback: enqueue time, time to the callback's result), ``sql``
(statements per enqueue, per execution, per group member, counted in-process), ``beat``
(``bench/beat.py``'s 10,000 schedules: distinct expressions and all due, warm and on a new
process; the beat endpoint is ours only, so there is nothing to compare it with).
The pairs the targets compare take turns round by round (ours-push with the floor and the
push ceiling under one gunicorn, ours-pull with the pull ceiling, ``.delay()`` with Celery's
``delay()`` with database results): on a machine whose speed drifts, a ratio then compares
rounds measured next to each other.
Output: a table, ``bench/results/<date>.json`` and ``bench/results/<date>.png`` (a complete
run, every system and workload on both databases, also writes ``bench/results/compare.png``,
the chart the README shows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCH_VENV = ROOT / ".venv-bench"
RESULTS = HERE / "results"
SYSTEMS = ["ours-push", "ours-pull", "ours-push@0", "ours-pull@0", "old", "celery-redis",
           "celery-db", "ceiling-push", "ceiling-pull", "floor"]
WORKLOADS = ["enqueue", "noop", "sleep", "fanout", "sql", "beat"]
#: Which workloads each system takes part in.
PLAN = {
    "ours-push": {"enqueue", "noop", "sleep", "fanout", "sql", "beat"},
    "ours-pull": {"noop", "sleep", "fanout"},
    "ours-push@0": {"noop"},
    "ours-pull@0": {"noop"},
    "old": {"enqueue", "noop", "sleep"},
    "celery-redis": {"enqueue", "noop", "sleep", "fanout"},
    "celery-db": {"enqueue", "noop", "sleep", "fanout", "sql"},
    "ceiling-push": {"noop"},
    "ceiling-pull": {"noop"},
    "floor": {"noop", "sql"},
}
FULL = {"enqueue": 1000, "noop": 2000, "sleep": 200, "fanout": 1000, "old_noop": 300,
        "rounds": 3}
QUICK = {"enqueue": 200, "noop": 200, "sleep": 40, "fanout": 100, "old_noop": 40,
         "rounds": 1}
SLEEP = 0.05
CONCURRENCY = 8
#: Messages pushed and pulled through the emulator before anything is measured.
WARM_UP = 3000


# --- small helpers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def poll(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timestamp(value: Any) -> float:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


# --- one database: everything runs in this process and its children ---------------------------


class Run:
    """The emulator, the database, the servers and workers of one run on one database."""

    def __init__(self, db: str, sizes: dict[str, int]) -> None:
        from django_i3tasks.testing.emulator import PubSubEmulator

        self.db, self.sizes = db, sizes
        self.children: list[subprocess.Popen] = []
        self.emulator = PubSubEmulator().start()
        self.port = free_port()
        name = (f"i3tasks_compare_{os.getpid()}" if db == "postgres" else
                os.path.join(tempfile.gettempdir(), f"i3tasks-compare-{os.getpid()}.sqlite3"))
        self.env = {
            **os.environ, "CMP_DB": db, "CMP_DB_NAME": name, "CMP_CONN_MAX_AGE": "60",
            "CMP_PUSH_URL": f"http://127.0.0.1:{self.port}/i3/tasks-push/",
            "CMP_NAMESPACE": f"cmp{os.getpid()}", "PUBSUB_EMULATOR_HOST": self.emulator.endpoint,
            "DJANGO_SETTINGS_MODULE": "compare_project.settings", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}",
        }
        os.environ.update(self.env)
        sys.path[:0] = [str(HERE), str(ROOT)]
        if db == "postgres":
            import psycopg

            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                                 autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}"')
        import django

        django.setup()
        from django.core.management import call_command

        from django_i3tasks.provisioning import ensure_pubsub

        call_command("migrate", verbosity=0, run_syncdb=True)
        ensure_pubsub()
        import redis

        self.redis = redis.Redis.from_url(os.environ.get("CMP_REDIS",
                                                         "redis://127.0.0.1:6379/7"))
        self.redis.flushdb()
        self._reference_topics()

    # -- Pub/Sub plumbing of the reference systems --

    def _reference_topics(self) -> None:
        from google.cloud import pubsub_v1

        project = "i3tasks-compare"
        ns = self.env["CMP_NAMESPACE"]
        self.publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(
            max_messages=100, max_latency=0.01))
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topics: dict[str, str] = {}
        self.subscriptions: dict[str, str] = {}
        for name, endpoint in (("ceiling", "ceiling/"), ("floor", "floor/"), ("pull", None)):
            topic = self.publisher.topic_path(project, f"{ns}.ref.{name}")
            sub = self.subscriber.subscription_path(project, f"{ns}.ref.{name}.sub")
            self.publisher.create_topic(name=topic)
            request: dict[str, Any] = {"name": sub, "topic": topic, "ack_deadline_seconds": 60}
            if endpoint:
                request["push_config"] = {
                    "push_endpoint": f"http://127.0.0.1:{self.port}/{endpoint}"}
            self.subscriber.create_subscription(request=request)
            self.topics[name], self.subscriptions[name] = topic, sub

    def publish_raw(self, topic: str, payloads: list[bytes]) -> None:
        futures = [self.publisher.publish(self.topics[topic], data) for data in payloads]
        for future in futures:
            future.result(timeout=120)

    # -- processes --

    def spawn(self, command: list[str], conn_max_age: int = 60,
              extra: dict[str, str] | None = None) -> subprocess.Popen:
        env = {**self.env, "CMP_CONN_MAX_AGE": str(conn_max_age), **(extra or {})}
        log = open(Path(tempfile.gettempdir()) / f"cmp-{os.getpid()}-{len(self.children)}.log",
                   "w")  # noqa: SIM115
        child = subprocess.Popen(command, env=env, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen) -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)

    def gunicorn(self, conn_max_age: int = 60) -> subprocess.Popen:
        child = self.spawn([str(Path(sys.executable).with_name("gunicorn")),
                            "compare_project.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", "2",
                            "--threads", "4", "--log-level", "warning"], conn_max_age)
        wait_port(self.port)
        return child

    def close(self) -> None:
        for child in self.children:
            self.stop(child)
        from django.db import connections

        connections.close_all()
        self.emulator.stop()
        if self.db == "postgres":
            import psycopg

            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                                 autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.env["CMP_DB_NAME"]}" '
                             "WITH (FORCE)")


# --- ours ---------------------------------------------------------------------------------------


def ours_clear() -> None:
    from django_i3tasks.models import TaskExecution, TaskGroup

    TaskGroup.objects.all().delete()
    TaskExecution.objects.all().delete()


def ours_throughput(task: Any, n: int, args: tuple = ()) -> float:
    from django.db.models import Max

    from django_i3tasks.models import TaskExecution

    ours_clear()
    started = time.time()
    for index in range(n):
        task.delay(index, *args)
    done = TaskExecution.objects.filter(status="success")
    poll(lambda: done.count() >= n, 600, f"{n} {task.name} tasks", 0.25)
    return n / (done.aggregate(last=Max("finished_at"))["last"].timestamp() - started)


def ours_fanout(member: Any, callback: Any, n: int) -> tuple[float, float]:
    from django_i3tasks.models import TaskExecution, TaskGroup

    ours_clear()
    started = time.time()
    group = TaskGroup.create(callback=callback, total_count=n)
    member.map([(i,) for i in range(n)], group=group)
    enqueued = time.time() - started
    group.refresh_from_db()
    joined = TaskExecution.objects.filter(pk=group.callback_id, status="success")
    poll(joined.exists, 600, "the group callback", 0.25)
    return enqueued, joined.get().finished_at.timestamp() - started


def ours_latency(n: int) -> list[float]:
    from compare_project.tasks import latency_noop

    from django_i3tasks import transport

    latencies = []
    for index in range(n):
        began = time.perf_counter()
        latency_noop.delay(index)
        latencies.append(time.perf_counter() - began)
    transport.flush()
    return latencies


def ours_sql() -> dict[str, int]:
    from compare_project.tasks import join, latency_noop, noop
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from harness import count

    from django_i3tasks import transport
    from django_i3tasks.messages import TaskMessage
    from django_i3tasks.models import TaskExecution, TaskGroup
    from tests.helpers import push_envelope

    def data(captured: Any) -> int:
        return count(captured)[1]

    with CaptureQueriesContext(connection) as captured:
        latency_noop.delay(0)
    per_enqueue = data(captured)
    transport.flush()
    client = Client()

    def push(execution: TaskExecution) -> int:
        message = TaskMessage.of(execution, *execution.tries.values_list("pk", "number").get())
        body = push_envelope(*message.encode())
        with CaptureQueriesContext(connection) as captured:
            answer = client.post("/i3/tasks-push/", body, content_type="application/json")
        assert answer.json()["status"] == "success", answer.content
        return data(captured)

    model = TaskExecution
    with transaction_without_publish():  # rows only: the push view is driven in-process
        execution = noop.delay(1).task_execution
        group = TaskGroup.create(callback=join, total_count=3)
        members = [noop.delay(i, __i3group__=group).task_execution for i in range(3)]
    per_execution = push(model.objects.get(pk=execution.pk))
    member_counts = [push(model.objects.get(pk=m.pk)) for m in members]
    return {"enqueue": per_enqueue, "execution": per_execution,
            "member": max(member_counts[:-1]), "last member": member_counts[-1]}


class _Discard:
    """An outbox that drops messages: rows only, the push view is driven in-process."""

    immediate = False

    def send(self, messages: Any) -> None:
        pass

    def scheduled(self, recorded: Any) -> None:
        pass


def transaction_without_publish() -> Any:
    """Write executions without publishing them (the push view is driven in-process)."""
    from django_i3tasks import outbox

    return outbox.use(_Discard())  # type: ignore[arg-type]


# --- Celery -------------------------------------------------------------------------------------


def celery_app(results: str) -> Any:
    from celery import Celery
    from django.conf import settings

    app = Celery("compare_project", set_as_current=True)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.result_backend = "django-db" if results == "db" else settings.REDIS_URL
    import compare_project.celery_tasks  # noqa: F401 - registers the shared tasks

    app.finalize()
    return app


def celery_worker(run: Run, results: str) -> subprocess.Popen:
    child = run.spawn([sys.executable, "-m", "celery", "-A", "compare_project.celery_app",
                       "worker", "--pool", "threads", "-c", str(CONCURRENCY), "-Q", "celery",
                       "-l", "warning", "--without-gossip", "--without-mingle",
                       "--without-heartbeat"], extra={"CMP_CELERY_RESULTS": results})
    return child


def celery_done_times(app: Any, ids: list[str], results: str) -> list[float]:
    if results == "db":
        from django_celery_results.models import TaskResult

        return [timestamp(d) for d in TaskResult.objects.filter(task_id__in=ids)
                .values_list("date_done", flat=True)]
    return [timestamp(app.AsyncResult(i).date_done) for i in ids]


def celery_throughput(app: Any, name: str, n: int, results: str, args: tuple = ()) -> float:
    from celery.result import ResultSet

    task = app.tasks[f"compare_project.celery_tasks.{name}"]
    started = time.time()
    handles = [task.delay(index, *args) for index in range(n)]
    ResultSet(handles, app=app).join(timeout=600, propagate=True, interval=0.2)
    return n / (max(celery_done_times(app, [h.id for h in handles], results)) - started)


def celery_fanout(app: Any, n: int) -> tuple[float, float]:
    from celery import chord

    noop = app.tasks["compare_project.celery_tasks.noop"]
    join = app.tasks["compare_project.celery_tasks.join"]
    started = time.time()
    result = chord(noop.s(i) for i in range(n))(join.s())
    enqueued = time.time() - started
    result.get(timeout=600, interval=0.2)
    return enqueued, timestamp(result.date_done) - started


def celery_latency(app: Any, n: int) -> list[float]:
    task = app.tasks["compare_project.celery_tasks.latency_noop"]
    latencies = []
    for index in range(n):
        began = time.perf_counter()
        task.delay(index)
        latencies.append(time.perf_counter() - began)
    return latencies


def celery_sql(app: Any) -> dict[str, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from harness import count

    with CaptureQueriesContext(connection) as captured:
        app.backend.mark_as_done(str(uuid.uuid4()), 1)
    return {"enqueue": 0, "execution": count(captured)[1]}


# --- the references -----------------------------------------------------------------------------


def ceiling_push(run: Run, n: int) -> float:
    run.redis.delete("cmp:ceiling", "cmp:ceiling:last")
    started = time.time()
    run.publish_raw("ceiling", [b"{}"] * n)
    poll(lambda: int(run.redis.get("cmp:ceiling") or 0) >= n, 300, "the ceiling pushes", 0.1)
    return n / (float(run.redis.get("cmp:ceiling:last")) - started)


def ceiling_pull(run: Run, n: int) -> float:
    from google.cloud import pubsub_v1

    seen: list[float] = []

    def callback(message: Any) -> None:
        message.ack()
        seen.append(time.time())

    future = run.subscriber.subscribe(
        run.subscriptions["pull"], callback,
        flow_control=pubsub_v1.types.FlowControl(max_messages=CONCURRENCY))
    try:
        time.sleep(0.5)
        started = time.time()
        run.publish_raw("pull", [b"{}"] * n)
        poll(lambda: len(seen) >= n, 300, "the pull ceiling", 0.1)
    finally:
        future.cancel()
        future.result(timeout=30)
    return n / (max(seen) - started)


def floor_throughput(run: Run, n: int) -> float:
    """The floor's tasks are enqueued as ours are, one at a time: an INSERT (autocommit) and
    a publish that is not waited for, so the ratio compares the same work end to end."""
    from compare_project.models import FloorTry
    from django.db.models import Max

    FloorTry.objects.all().delete()
    started = time.time()
    futures = []
    for index in range(n):
        row = FloorTry.objects.create()
        futures.append(run.publisher.publish(
            run.topics["floor"], json.dumps({"try": row.pk, "args": [index]}).encode()))
    for future in futures:
        future.result(timeout=120)
    done = FloorTry.objects.filter(status="success")
    poll(lambda: done.count() >= n, 300, "the floor", 0.2)
    return n / (done.aggregate(last=Max("finished_at"))["last"].timestamp() - started)


def floor_sql() -> dict[str, int]:
    from compare_project.models import FloorTry
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from harness import count

    from tests.helpers import push_envelope

    row = FloorTry.objects.create()
    body = push_envelope(json.dumps({"try": row.pk, "args": [1]}).encode())
    with CaptureQueriesContext(connection) as captured:
        Client().post("/floor/", body, content_type="application/json")
    return {"enqueue": 1, "execution": count(captured)[1]}


def beat_figures(db: str) -> dict[str, Any]:
    """``bench/beat.py`` (distinct expressions and all due) in its own process, own emulator
    and own test database."""
    path = Path(tempfile.gettempdir()) / f"cmp-beat-{os.getpid()}.json"
    env = {**os.environ, "BEAT_KINDS": "distinct,all due", "BEAT_JSON": str(path),
           "I3TASKS_TEST_DB_NAME": f"i3tasks_beat_{os.getpid()}"}
    subprocess.run([sys.executable, str(HERE / "beat.py"), "--db", db], env=env, check=True)
    return json.loads(path.read_text())["scenarios"]


def old_side(run: Run, n: int, seconds: float) -> dict[str, Any]:
    os.environ.setdefault("I3TASKS_BENCH_OLD_VENV",
                          str(Path.home() / ".cache" / "django-i3tasks" / "compare-old-venv"))
    from pull import OLD_DIR, ensure_old_venv

    python = ensure_old_venv()
    env = {**run.env, "I3TASKS_TEST_DB": run.db, "I3OLD_NAMESPACE": f"{run.env['CMP_NAMESPACE']}"
           f".old{uuid.uuid4().hex[:6]}", "PYTHONPATH": ""}
    env["I3TASKS_SQLITE_PATH" if run.db == "sqlite" else "I3TASKS_TEST_DB_NAME"] = \
        run.env["CMP_DB_NAME"]
    done = subprocess.run([str(python), str(OLD_DIR / "drive.py"), "--tasks", str(n),
                           "--seconds", str(seconds), "--poll", "0.25"],
                          cwd=OLD_DIR, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"0.1.9 failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --- the run on one database -------------------------------------------------------------------


def measure(db: str, systems: list[str], workloads: list[str], sizes: dict[str, int]
            ) -> dict[str, Any]:
    run = Run(db, sizes)
    out: dict[str, dict[str, Any]] = {s: {} for s in systems}
    rounds = sizes["rounds"]

    def note(system: str, workload: str, value: Any) -> None:
        out[system][workload] = value
        print(f"  {system:<13} {workload:<16} {json.dumps(value, default=str)[:150]}",
              flush=True)

    def wanted(system: str, workload: str) -> bool:
        return system in systems and workload in workloads and workload in PLAN[system]

    try:
        from compare_project import tasks

        # The Java emulator runs several times faster once its JIT has compiled the push and
        # pull paths: warm both up first, or whichever system runs first pays for it.
        server = run.gunicorn(60)
        ceiling_push(run, WARM_UP)
        run.stop(server)
        ceiling_pull(run, WARM_UP)

        for system, conn in (("ours-push", 60), ("ours-push@0", 0)):
            if not any(wanted(system, w) for w in WORKLOADS):
                continue
            server = run.gunicorn(conn)
            ours_throughput(tasks.noop, 20)  # warm-up: both workers, their connections
            if wanted(system, "noop"):
                # The references served by the same gunicorn take turns with ours, round by
                # round: a ratio then compares rounds measured minutes apart at most, not
                # a system measured while the machine was slow with one measured later.
                paired = {name: measure_ref for name, measure_ref in (
                    ("floor", floor_throughput), ("ceiling-push", ceiling_push))
                    if system == "ours-push" and wanted(name, "noop")}
                rates: dict[str, list[float]] = {system: [], **{name: [] for name in paired}}
                for measure_ref in paired.values():
                    measure_ref(run, 50)
                for _ in range(rounds):
                    rates[system].append(ours_throughput(tasks.noop, sizes["noop"]))
                    for name, measure_ref in paired.items():
                        rates[name].append(measure_ref(run, sizes["noop"]))
                for name, values in rates.items():
                    note(name, "noop", summary(values))
            if wanted(system, "sleep"):
                note(system, "sleep", summary([ours_throughput(tasks.nap, sizes["sleep"],
                                                               (SLEEP,)) for _ in range(rounds)]))
            if wanted(system, "fanout"):
                pairs = [ours_fanout(tasks.noop, tasks.join, sizes["fanout"])
                         for _ in range(rounds)]
                note(system, "fanout", {"enqueue": summary([p[0] for p in pairs]),
                                        "callback": summary([p[1] for p in pairs])})
            run.stop(server)
        if wanted("ours-push", "enqueue"):
            # Celery with database results takes turns with ours, round by round (as above).
            samples: dict[str, list[list[float]]] = {"ours-push": []}
            app = None
            if wanted("celery-db", "enqueue"):
                app = celery_app("db")
                samples["celery-db"] = []
                celery_latency(app, 50)
            ours_latency(50)
            for _ in range(rounds):
                samples["ours-push"].append(ours_latency(sizes["enqueue"]))
                if app is not None:
                    samples["celery-db"].append(celery_latency(app, sizes["enqueue"]))
            run.redis.delete("latency")
            for name, lat in samples.items():
                note(name, "enqueue", {
                    "median": summary([statistics.median(v) for v in lat]),
                    "p95": summary([percentile(v, 0.95) for v in lat])})
        if wanted("ours-push", "sql"):
            note("ours-push", "sql", ours_sql())

        for system, conn in (("ours-pull", 60), ("ours-pull@0", 0)):
            if not any(wanted(system, w) for w in WORKLOADS):
                continue
            worker = run.spawn([sys.executable, "-m", "django", "i3tasks_worker", "--queue",
                                "pull", "--concurrency", str(CONCURRENCY),
                                "--status-interval", "3600"], conn)
            ours_throughput(tasks.noop_pull, 20)
            if wanted(system, "noop"):
                # The pull ceiling takes turns with ours (the worker idles meanwhile).
                ceiling = system == "ours-pull" and wanted("ceiling-pull", "noop")
                rates = {system: [], **({"ceiling-pull": []} if ceiling else {})}
                if ceiling:
                    ceiling_pull(run, 50)
                for _ in range(rounds):
                    rates[system].append(ours_throughput(tasks.noop_pull, sizes["noop"]))
                    if ceiling:
                        rates["ceiling-pull"].append(ceiling_pull(run, sizes["noop"]))
                for name, values in rates.items():
                    note(name, "noop", summary(values))
            if wanted(system, "sleep"):
                note(system, "sleep", summary([
                    ours_throughput(tasks.nap_pull, sizes["sleep"], (SLEEP,))
                    for _ in range(rounds)]))
            if wanted(system, "fanout"):
                pairs = [ours_fanout(tasks.noop_pull, tasks.join_pull, sizes["fanout"])
                         for _ in range(rounds)]
                note(system, "fanout", {"enqueue": summary([p[0] for p in pairs]),
                                        "callback": summary([p[1] for p in pairs])})
            run.stop(worker)
        ours_clear()

        for results in ("redis", "db"):
            system = f"celery-{results}"
            if not any(wanted(system, w) for w in WORKLOADS):
                continue
            app = celery_app(results)
            worker = celery_worker(run, results)
            celery_throughput(app, "noop", 20, results)  # warm-up (and waits for the worker)
            if wanted(system, "enqueue") and "enqueue" not in out[system]:
                celery_latency(app, 50)
                lat = [celery_latency(app, sizes["enqueue"]) for _ in range(rounds)]
                note(system, "enqueue", {
                    "median": summary([statistics.median(v) for v in lat]),
                    "p95": summary([percentile(v, 0.95) for v in lat])})
                run.redis.delete("latency")
            if wanted(system, "noop"):
                note(system, "noop", summary([celery_throughput(app, "noop", sizes["noop"],
                                                                results) for _ in range(rounds)]))
            if wanted(system, "sleep"):
                note(system, "sleep", summary([
                    celery_throughput(app, "nap", sizes["sleep"], results, (SLEEP,))
                    for _ in range(rounds)]))
            if wanted(system, "fanout"):
                pairs = [celery_fanout(app, sizes["fanout"]) for _ in range(rounds)]
                note(system, "fanout", {"enqueue": summary([p[0] for p in pairs]),
                                        "callback": summary([p[1] for p in pairs])})
            if wanted(system, "sql") and results == "db":
                note(system, "sql", celery_sql(app))
            run.stop(worker)

        def unmeasured(system: str) -> bool:  # not already measured beside ours
            return wanted(system, "noop") and "noop" not in out[system]

        if unmeasured("ceiling-push") or unmeasured("floor") or wanted("floor", "sql"):
            server = run.gunicorn(60)
            if unmeasured("ceiling-push"):
                ceiling_push(run, 50)
                note("ceiling-push", "noop", summary([ceiling_push(run, sizes["noop"])
                                                      for _ in range(rounds)]))
            if unmeasured("floor"):
                floor_throughput(run, 50)
                note("floor", "noop", summary([floor_throughput(run, sizes["noop"])
                                               for _ in range(rounds)]))
            if wanted("floor", "sql"):
                note("floor", "sql", floor_sql())
            run.stop(server)
        if unmeasured("ceiling-pull"):
            ceiling_pull(run, 50)
            note("ceiling-pull", "noop", summary([ceiling_pull(run, sizes["noop"])
                                                  for _ in range(rounds)]))

        if "old" in systems:
            for workload, n, seconds in (("noop", sizes["old_noop"], 0.0),
                                         ("sleep", sizes["sleep"], SLEEP)):
                if not wanted("old", workload):
                    continue
                rates, enqueue = [], []
                for _ in range(rounds):
                    try:
                        result = old_side(run, n, seconds)
                    except RuntimeError as exc:  # report the others anyway
                        print(f"  old {workload}: {exc}", flush=True)
                        break
                    rates.append(n / (result["last_recorded"] - result["started"]))
                    enqueue.append(result["enqueue_seconds"] / n)
                if not rates:
                    continue
                note("old", workload, {**summary(rates), "tasks": n})
                if wanted("old", "enqueue") and "enqueue" not in out["old"]:
                    note("old", "enqueue", {"mean": summary(enqueue)})
        # Last: 70,000 rows written and deleted leave the database busy (autovacuum) for a
        # while, which would weigh on whatever ran next.
        if wanted("ours-push", "beat"):
            note("ours-push", "beat", beat_figures(db))
    finally:
        run.close()
    return {"db": db, "load_average": os.getloadavg(), "sizes": sizes, "systems": out}


# --- report -------------------------------------------------------------------------------------


def med(entry: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(entry, dict) or key not in entry:
            return None
        entry = entry[key]
    return entry["median"] if isinstance(entry, dict) else entry


def table(result: dict[str, Any]) -> str:
    s = result["systems"]
    lines = [f"\n## {result['db']}  (sizes {result['sizes']}, load average at the end "
             f"{result['load_average'][0]:.2f})"]

    def fmt(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:,.1f}{unit}"

    head = f"{'system':<14}{'noop/s':>10}{'spread':>16}{'50ms/s':>9}{'fanout enq s':>13}" \
           f"{'callback s':>11}{'enqueue ms':>11}{'p95 ms':>8}"
    lines.append(head)
    for system, entry in s.items():
        noop = entry.get("noop")
        spread = "-" if not noop else f"{noop['min']:.0f}-{noop['max']:.0f}"
        lat = med(entry, "enqueue", "median") or med(entry, "enqueue", "mean")
        p95 = med(entry, "enqueue", "p95")
        lines.append(f"{system:<14}{fmt(med(entry, 'noop')):>10}{spread:>16}"
                     f"{fmt(med(entry, 'sleep')):>9}{fmt(med(entry, 'fanout', 'enqueue')):>13}"
                     f"{fmt(med(entry, 'fanout', 'callback')):>11}"
                     f"{fmt(lat and lat * 1000):>11}{fmt(p95 and p95 * 1000):>8}")
    for system, entry in s.items():
        if "sql" in entry:
            lines.append(f"SQL data statements, {system}: {entry['sql']}")

    def ratio(a: str, b: str, workload: str, target: float | None = None) -> None:
        x, y = med(s.get(a, {}), workload), med(s.get(b, {}), workload)
        if x and y:
            verdict = "" if target is None else (
                f"  (target >= {target:.0%}: {'met' if x / y >= target else 'MISSED'})")
            lines.append(f"{workload:<6} {a} / {b}: {x / y:6.1%}{verdict}")

    lines.append("ratios (throughput):")
    ratio("ours-push", "floor", "noop", 0.8)
    ratio("ours-push", "ceiling-push", "noop")
    ratio("floor", "ceiling-push", "noop")
    ratio("ours-pull", "ceiling-pull", "noop", 0.6)
    for other in ("celery-db", "celery-redis", "old"):
        ratio("ours-pull", other, "noop", 1.0 if other == "celery-db" else None)
        ratio("ours-pull", other, "sleep", 1.0 if other == "celery-db" else None)
        ratio("ours-push", other, "noop")
    ratio("ours-push", "ours-push@0", "noop")
    ratio("ours-pull", "ours-pull@0", "noop")
    ours = med(s.get("ours-push", {}), "enqueue", "median")
    theirs = med(s.get("celery-db", {}), "enqueue", "median")
    if ours and theirs:
        lines.append(f"enqueue latency ours / celery-db: {ours / theirs:.2f} "
                     f"(target <= 1: {'met' if ours <= theirs else 'MISSED'})")
    for kind, figures in s.get("ours-push", {}).get("beat", {}).items():
        target = figures["target"]
        met = max(figures["warm_median"], figures["new_process"]) < target
        lines.append(
            f"beat, 10,000 schedules, {kind}: warm {figures['warm_median'] * 1000:,.0f} ms "
            f"(max {figures['warm_max'] * 1000:,.0f}), new process "
            f"{figures['new_process'] * 1000:,.0f} ms, first call ever "
            f"{figures['cold'] * 1000:,.0f} ms (target < {target * 1000:,.0f} ms warm and new "
            f"process: {'met' if met else 'MISSED'})")
    return "\n".join(lines)


def chart(results: list[dict[str, Any]], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(results), 2, figsize=(13, 4.2 * len(results)),
                                squeeze=False)
    for row, result in zip(axes, results, strict=True):
        for ax, workload, title in ((row[0], "noop", "no-op tasks/s"),
                                    (row[1], "sleep", "50 ms tasks/s (8 at once)")):
            names = [n for n, e in result["systems"].items() if workload in e]
            values = [med(result["systems"][n], workload) for n in names]
            errors = [[v - result["systems"][n][workload]["min"] for n, v in
                       zip(names, values, strict=True)],
                      [result["systems"][n][workload]["max"] - v for n, v in
                       zip(names, values, strict=True)]]
            colors = ["#1f77b4" if n.startswith("ours") else "#999999"
                      if n.startswith(("ceiling", "floor")) else "#d62728" for n in names]
            ax.bar(names, values, yerr=errors, color=colors, capsize=3)
            ax.set_title(f"{result['db']}: {title}")
            ax.tick_params(axis="x", rotation=35)
    figure.suptitle(f"django-i3tasks vs Celery 5 + Redis vs 0.1.9 vs transport ceiling - "
                    f"{machine}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def machine() -> str:
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
            f", load average {load:.1f} when the run ended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--partial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import celery  # noqa: F401
        import gunicorn  # noqa: F401
    except ImportError:
        python = BENCH_VENV / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "-e",
                            f"{ROOT}[test,bench]"], check=True)
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])
    sizes = dict(QUICK if args.quick else FULL)
    if args.rounds:
        sizes["rounds"] = args.rounds
    systems = [s for s in args.systems.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(systems) - set(SYSTEMS) | set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown systems/workloads: {sorted(unknown)}")
    sys.path[:0] = [str(HERE), str(ROOT)]
    if args.partial:
        result = measure(args.partial.split(":")[0], systems, workloads, sizes)
        Path(args.partial.split(":", 1)[1]).write_text(json.dumps(result))
        return
    results = []
    for db in (["sqlite", "postgres"] if args.db == "both" else [args.db]):
        partial = Path(tempfile.gettempdir()) / f"cmp-{os.getpid()}-{db}.json"
        print(f"\n# {db}", flush=True)
        subprocess.run([sys.executable, __file__, f"--partial={db}:{partial}",
                        f"--systems={','.join(systems)}", f"--workloads={','.join(workloads)}",
                        *(["--quick"] if args.quick else []),
                        *([f"--rounds={args.rounds}"] if args.rounds else [])], check=True)
        results.append(json.loads(partial.read_text()))
    for result in results:
        print(table(result))
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M") + ("-quick" if args.quick else "")
    document = {"date": stamp, "machine": machine(), "results": results}
    (RESULTS / f"{stamp}.json").write_text(json.dumps(document, indent=1))
    chart(results, RESULTS / f"{stamp}.png", machine())
    full = (not args.quick and args.db == "both" and systems == SYSTEMS
            and workloads == WORKLOADS)
    if full:  # the chart the README shows comes from complete runs only
        chart(results, RESULTS / "compare.png", machine())
    print(f"\nwrote {RESULTS / (stamp + '.json')} and {RESULTS / (stamp + '.png')}")


if __name__ == "__main__":
    main()
