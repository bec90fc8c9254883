"""Side by side: django-i3tasks against 0.1.9, Celery, the durable peers (procrastinate,
django-tasks' database backend), the design's floor and the transport ceiling; same machine,
same emulator, same database, one run. ``docs/performance.md``, "Fair comparison (method)",
says how each system is configured and why.

Run: ``python bench/compare.py`` (both databases, 3 rounds; long) or ``--quick`` (small
counts, one round), ``--db sqlite|postgres|both``, ``--systems ours-push,ours-pull,...``,
``--workloads enqueue,bulk,noop,sleep,fanout,sql,beat``. It needs the ``bench`` extra:
when Celery is missing it makes ``.venv-bench`` (``pip install -e .[test,bench]``) and runs
itself there. Redis must answer on 127.0.0.1:6379 (db 7 is flushed); ``redis-server`` must
be on PATH (a second one, with appendonly, is started on a free port). The Django project of
the run is ``bench/compare_project``; every process of a run reads the same settings.

Systems, each with a budget of 8 tasks at once on this 2-core machine:
- ``ours-push``: the push view under gunicorn (2 workers x 8 threads, so the server is never
  the limit), fed by the Python emulator's push subscription at 8 requests in flight; a
  backlog is enqueued with push paused, then delivered. ``ours-pull``:
  ``manage.py i3tasks_worker --concurrency 8``. Both with ``CONN_MAX_AGE=60``;
  ``ours-push@0``/``ours-pull@0`` repeat the no-op workload with Django's default 0.
  Ours runs with the Prometheus receivers connected (the ``test`` extra installs
  prometheus-client); ``ours-push-metrics-off`` is the push no-op with them disconnected,
  on a second server, in turn with ``ours-push`` (issue 26's "metrics on and off").
  ``ours-pull-backlog``: the pull worker alone, in turn with ``ours-pull``: the tasks are
  enqueued in bulk while no worker runs, then a worker starts; from its first recorded
  finish to its last. Every other throughput row includes the driver's one-by-one enqueues.
- ``old``: django-i3tasks 0.1.9, 8 of its pull workers, the same task bodies.
- ``celery-redis``, ``celery-db``, ``celery-db-safe``: see ``bench/celery_side.py`` (both
  pools, the better one per workload; connections kept; the last one with acks_late,
  reject_on_worker_lost and a Redis that writes an append-only file every second).
- ``procrastinate``, ``django-tasks-db``: see ``bench/peers.py``.
- ``ceiling-push``: the same push to a view that only acknowledges; ``ceiling-pull``: a
  streaming-pull subscriber that only acknowledges, at our worker's flow control.
- ``floor``: a bare Django view, raw SQL: claim (one conditional UPDATE), then one
  autocommit statement that finishes the try and writes its result; ``naive-floor``: the same
  writes through the ORM (claim, BEGIN, UPDATE, INSERT, COMMIT).

Workloads: ``enqueue`` (latency of single enqueues, nobody consuming), ``bulk`` (1,000 tasks
in one call of each system's bulk API), ``noop`` (no-op tasks), ``sleep`` (50 ms tasks),
``fanout`` (1,000 members; with a join callback where the system has one), ``sql``
(statements per enqueue and per execution), ``beat`` (``bench/beat.py``, ours only).
Throughput: from the first enqueue (push: from the end of the hold) to the last finish time
the system recorded, detected the same way for every system: one COUNT every 0.25 s.
Paired systems take turns round by round (push with the floors and the ceiling, pull with the
pull ceiling, every enqueue). Printed on the way: PostgreSQL sessions opened per task for
every throughput run (the run fails when one is above about 0) and the requests in flight of
every push run (in the views, and at the emulator's sender).
Output: a table, the targets, ``bench/results/<date>.json`` (with every package's version and
every system's settings) and ``.png`` (a complete run also writes ``bench/results/compare.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCH_VENV = ROOT / ".venv-bench"
RESULTS = HERE / "results"
SYSTEMS = ["ours-push", "ours-pull", "ours-push@0", "ours-pull@0", "ours-push-metrics-off",
           "ours-pull-backlog", "old",
           "celery-redis", "celery-db", "celery-db-safe", "procrastinate", "django-tasks-db",
           "ceiling-push", "ceiling-pull", "floor", "naive-floor"]
WORKLOADS = ["enqueue", "bulk", "noop", "sleep", "fanout", "sql", "beat"]
_QUEUES = {"enqueue", "bulk", "noop", "sleep", "fanout"}
#: Which workloads each system takes part in.
PLAN = {
    "ours-push": {"enqueue", "bulk", "noop", "sleep", "fanout", "sql", "beat"},
    "ours-pull": {"noop", "sleep", "fanout"},
    "ours-push@0": {"noop"},
    "ours-pull@0": {"noop"},
    "ours-push-metrics-off": {"noop"},
    "ours-pull-backlog": {"noop"},
    "old": {"enqueue", "noop", "sleep"},
    "celery-redis": _QUEUES,
    "celery-db": _QUEUES | {"sql"},
    "celery-db-safe": _QUEUES,
    "procrastinate": _QUEUES,
    "django-tasks-db": _QUEUES,
    "ceiling-push": {"noop"},
    "ceiling-pull": {"noop"},
    "floor": {"noop", "sql"},
    "naive-floor": {"noop", "sql"},
}
#: Systems that run on PostgreSQL only.
POSTGRES_ONLY = {"procrastinate"}
#: Rows that keep Django's default CONN_MAX_AGE=0 on purpose: one session per task expected.
NEW_SESSION_PER_TASK = {"ours-push@0", "ours-pull@0"}
PUSH_SERVED = ("ours-push", "ours-push-metrics-off", "floor", "naive-floor", "ceiling-push")
FULL = {"enqueue": 1000, "bulk": 1000, "noop": 2000, "sleep": 200, "fanout": 1000,
        "old_noop": 300, "rounds": 3}
QUICK = {"enqueue": 200, "bulk": 1000, "noop": 200, "sleep": 40, "fanout": 100,
         "old_noop": 40, "rounds": 1}
SLEEP = 0.05
#: Tasks at once for every system: gunicorn 2 x 4 threads, the emulator's push concurrency,
#: the pull worker's threads, Celery's -c, procrastinate's --concurrency, db_worker processes.
CONCURRENCY = 8
#: Every system's completion is one COUNT (or one Redis EXISTS) this often.
POLL = 0.25
#: (started, ended) of the last throughput run: the window requests in flight are counted in.
WINDOW: list[float] = [0.0, 0.0]
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
        from fairness import DurableRedis

        from django_i3tasks.testing.emulator import PubSubEmulator

        self.db, self.sizes = db, sizes
        self.children: list[subprocess.Popen] = []
        # The Python emulator: its push subscriptions have a fixed, known number of requests
        # in flight, 8 (Google's emulator chooses its own).
        os.environ["I3TASKS_EMULATOR"] = "python"
        os.environ["I3TASKS_EMULATOR_PUSH_CONCURRENCY"] = str(CONCURRENCY)
        # The emulator writes its requests in flight per push subscription there.
        self.push_stats = Path(tempfile.gettempdir()) / f"cmp-push-stats-{os.getpid()}.json"
        os.environ["I3TASKS_EMULATOR_PUSH_STATS"] = str(self.push_stats)
        self.emulator = PubSubEmulator().start()
        self.durable_redis = DurableRedis(free_port())
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
        from fairness import Sessions

        self.sessions = Sessions("host=127.0.0.1 user=postgres dbname=postgres", name) \
            if db == "postgres" else None

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
        for name, endpoint in (("ceiling", "ceiling/"), ("floor", "floor/"),
                               ("naive-floor", "naive-floor/"), ("pull", None)):
            topic = self.publisher.topic_path(project, f"{ns}.ref.{name}")
            sub = self.subscriber.subscription_path(project, f"{ns}.ref.{name}.sub")
            self.publisher.create_topic(name=topic)
            request: dict[str, Any] = {"name": sub, "topic": topic, "ack_deadline_seconds": 60}
            if endpoint:
                request["push_config"] = {
                    "push_endpoint": f"http://127.0.0.1:{self.port}/{endpoint}"}
            self.subscriber.create_subscription(request=request)
            self.topics[name], self.subscriptions[name] = topic, sub

    @contextlib.contextmanager
    def push_held(self, subscription: str, endpoint: str) -> Iterator[None]:
        """Push paused (the subscription made pull, its messages kept) inside the block, and
        resumed at its end: what is enqueued inside is then a backlog that the emulator's 8
        sender threads deliver 8 at once (enqueued while pushing, the push rows ran only as
        fast as the driver enqueued: 1 to 2 requests in flight)."""
        self.subscriber.modify_push_config(request={"subscription": subscription,
                                                    "push_config": {}})
        try:
            yield
        finally:
            self.subscriber.modify_push_config(request={
                "subscription": subscription, "push_config": {"push_endpoint": endpoint}})

    def hold_reference(self, name: str) -> Any:
        endpoint = {"ceiling": "ceiling/", "floor": "floor/", "naive-floor": "naive-floor/"}
        return self.push_held(self.subscriptions[name],
                              f"http://127.0.0.1:{self.port}/{endpoint[name]}")

    def sender_in_flight(self, system: str) -> dict[str, float]:
        """Requests in flight as the emulator's sender threads counted them, over the
        window of the last run (its sender was created when the hold ended)."""
        from django_i3tasks.conf import get_settings, pubsub_config

        path = pubsub_config().subscription_path(get_settings().default_queue) \
            if system.startswith("ours") else self.subscriptions[
                {"ceiling-push": "ceiling"}.get(system, system)]
        stats = json.loads(self.push_stats.read_text()).get(path) \
            if self.push_stats.exists() else None
        if not stats:
            return {"mean": 0.0, "max": 0, "requests": 0}
        seconds = stats["seconds_at"]
        return {"mean": sum(k * t for k, t in enumerate(seconds)) / (WINDOW[1] - WINDOW[0]),
                "max": max((k for k, t in enumerate(seconds) if t > 0), default=0),
                "requests": stats["requests"]}

    def hold_ours(self) -> Any:
        from django_i3tasks.conf import get_settings, pubsub_config

        queue = get_settings().default_queue
        return self.push_held(pubsub_config().subscription_path(queue),
                              self.env["CMP_PUSH_URL"])

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

    def gunicorn(self, conn_max_age: int = 60, port: int | None = None,
                 extra: dict[str, str] | None = None) -> subprocess.Popen:
        port = port or self.port
        child = self.spawn([str(Path(sys.executable).with_name("gunicorn")),
                            "compare_project.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2",
                            "--threads", "8", "--log-level", "warning"], conn_max_age,
                           {"CMP_INFLIGHT": "1", **(extra or {})})
        wait_port(port)
        return child

    def hold_ours_at(self, port: int) -> Any:
        """As ``hold_ours``, but the backlog is then pushed to the server on ``port``."""
        from django_i3tasks.conf import get_settings, pubsub_config

        return self.push_held(pubsub_config().subscription_path(get_settings().default_queue),
                              f"http://127.0.0.1:{port}/i3/tasks-push/")

    def close(self) -> None:
        for child in self.children:
            self.stop(child)
        from django.db import connections

        connections.close_all()
        self.emulator.stop()
        self.durable_redis.stop()
        self.push_stats.unlink(missing_ok=True)
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


def ours_throughput(task: Any, n: int, args: tuple = (), hold: Any = None) -> float:
    """From the first enqueue to the last recorded result; with ``hold`` (push), from the
    end of the hold (a backlog of ``n`` delivered 8 at once) to the last result."""
    from django.db.models import Max

    from django_i3tasks import transport
    from django_i3tasks.models import TaskExecution

    ours_clear()
    started = time.time()
    with hold or contextlib.nullcontext():
        for index in range(n):
            task.delay(index, *args)
        if hold is not None:
            transport.flush()
            started = time.time()
    done = TaskExecution.objects.filter(status="success")
    poll(lambda: done.count() >= n, 600, f"{n} {task.name} tasks", POLL)
    WINDOW[:] = [started, done.aggregate(last=Max("finished_at"))["last"].timestamp()]
    return n / (WINDOW[1] - started)


def ours_backlog(task: Any, n: int, start: Callable[[], Any]) -> float:
    """The pull worker alone: ``n`` tasks enqueued in bulk while no worker runs, then a worker
    is started; from its first recorded finish to its last (its start-up not counted)."""
    from django.db.models import Max, Min

    from django_i3tasks import transport
    from django_i3tasks.models import TaskExecution

    ours_clear()
    task.map([(index,) for index in range(n)])
    transport.flush()
    start()
    done = TaskExecution.objects.filter(status="success")
    poll(lambda: done.count() >= n, 600, f"{n} {task.name} tasks (backlog)", POLL)
    span = done.aggregate(first=Min("finished_at"), last=Max("finished_at"))
    WINDOW[:] = [span["first"].timestamp(), span["last"].timestamp()]
    return (n - 1) / (WINDOW[1] - WINDOW[0])


def ours_fanout(member: Any, callback: Any, n: int) -> tuple[float, float]:
    from django_i3tasks.models import TaskExecution, TaskGroup

    ours_clear()
    started = time.time()
    group = TaskGroup.create(callback=callback, total_count=n)
    member.map([(i,) for i in range(n)], group=group)
    enqueued = time.time() - started
    group.refresh_from_db()
    joined = TaskExecution.objects.filter(pk=group.callback_id, status="success")
    poll(joined.exists, 600, "the group callback", POLL)
    return enqueued, joined.get().finished_at.timestamp() - started


def ours_bulk(n: int) -> float:
    """``n`` tasks in one ``.map()`` (bulk rows, batched publish), to the queue nobody reads."""
    from compare_project.tasks import latency_noop

    from django_i3tasks import transport

    started = time.perf_counter()
    latency_noop.map(range(n))
    elapsed = time.perf_counter() - started
    transport.flush()
    return elapsed


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


def transaction_without_publish() -> Any:
    """Write executions without publishing them (the push view is driven in-process)."""
    from django_i3tasks import outbox

    class Discard(outbox.Outbox):
        def send(self, messages: Any) -> None:
            pass

    return outbox.use(Discard())


# --- the references -----------------------------------------------------------------------------


def ceiling_push(run: Run, n: int) -> float:
    """A backlog of ``n`` pushed 8 at once to a view that only acknowledges."""
    run.redis.delete("cmp:ceiling", "cmp:ceiling:last")
    with run.hold_reference("ceiling"):
        run.publish_raw("ceiling", [b"{}"] * n)
        started = time.time()
    poll(lambda: int(run.redis.get("cmp:ceiling") or 0) >= n, 300, "the ceiling pushes", POLL)
    WINDOW[:] = [started, float(run.redis.get("cmp:ceiling:last"))]
    return n / (WINDOW[1] - started)


def ceiling_pull(run: Run, n: int) -> float:
    from google.cloud import pubsub_v1

    seen: list[float] = []

    def callback(message: Any) -> None:
        message.ack()
        seen.append(time.time())

    future = run.subscriber.subscribe(
        run.subscriptions["pull"], callback,
        flow_control=pubsub_v1.types.FlowControl(max_messages=pull_flow_control()))
    try:
        time.sleep(0.5)
        started = time.time()
        run.publish_raw("pull", [b"{}"] * n)
        poll(lambda: len(seen) >= n, 300, "the pull ceiling", POLL)
    finally:
        future.cancel()
        future.result(timeout=30)
    return n / (max(seen) - started)


def pull_flow_control() -> int:
    """The messages our pull worker leases at ``--concurrency 8``: the pull ceiling's."""
    from django_i3tasks.worker import LEASED_PER_THREAD

    return LEASED_PER_THREAD * CONCURRENCY


def floor_throughput(run: Run, n: int, topic: str = "floor") -> float:
    """The floor's tasks are enqueued as ours are, one at a time: an INSERT (autocommit) and
    a publish, push held; then the backlog is delivered 8 at once, as ours is.
    ``topic``: ``floor`` (2 statements, raw SQL) or ``naive-floor`` (the ORM, 5)."""
    from compare_project.models import FloorTry
    from django.db.models import Max

    FloorTry.objects.all().delete()
    with run.hold_reference(topic):  # a backlog, as for ours
        futures = []
        for index in range(n):
            row = FloorTry.objects.create()
            futures.append(run.publisher.publish(
                run.topics[topic], json.dumps({"try": row.pk, "args": [index]}).encode()))
        for future in futures:
            future.result(timeout=120)
        started = time.time()
    done = FloorTry.objects.filter(status="success")
    poll(lambda: done.count() >= n, 300, f"the {topic}", POLL)
    WINDOW[:] = [started, done.aggregate(last=Max("finished_at"))["last"].timestamp()]
    return n / (WINDOW[1] - started)


def floor_sql(path: str = "/floor/") -> dict[str, int]:
    from compare_project.models import FloorTry
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from harness import count

    from tests.helpers import push_envelope

    row = FloorTry.objects.create()
    body = push_envelope(json.dumps({"try": row.pk, "args": [1]}).encode())
    with CaptureQueriesContext(connection) as captured:
        Client().post(path, body, content_type="application/json")
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
           f".old{uuid.uuid4().hex[:6]}", "PYTHONPATH": "", "I3OLD_CONN_MAX_AGE": "60"}
    env["I3TASKS_SQLITE_PATH" if run.db == "sqlite" else "I3TASKS_TEST_DB_NAME"] = \
        run.env["CMP_DB_NAME"]
    done = subprocess.run([str(python), str(OLD_DIR / "drive.py"), "--tasks", str(n),
                           "--seconds", str(seconds), "--poll", str(POLL),
                           "--workers", str(CONCURRENCY), "--body", "compare",
                           "--warm-up", str(10 * CONCURRENCY)],
                          cwd=OLD_DIR, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"0.1.9 failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --- the run on one database -------------------------------------------------------------------


def old_version() -> str | None:
    from pull import OLD_VERSION

    return OLD_VERSION


def system_settings(run: Run, django_settings: Any) -> dict[str, Any]:
    """How each system was configured in this run, in words and figures."""
    import celery_side
    import peers

    database = {"CONN_MAX_AGE": 60, "engine": django_settings.DATABASES["default"]["ENGINE"]}
    server = {"server": "gunicorn gthread, 2 workers x 8 threads (never the limit: the "
                        "emulator sends 8 at once)",
              "emulator": f"Python emulator, push concurrency {CONCURRENCY} per subscription",
              **database}
    return {
        "ours-push": {**server, "endpoint": "the push view (django_i3tasks.urls)"},
        "ours-push@0": {**server, "CONN_MAX_AGE": 0},
        "ours-pull": {"worker": f"manage.py i3tasks_worker --concurrency {CONCURRENCY}",
                      "flow_control": pull_flow_control(), **database},
        "ours-pull@0": {"worker": f"manage.py i3tasks_worker --concurrency {CONCURRENCY}",
                        "flow_control": pull_flow_control(), **database, "CONN_MAX_AGE": 0},
        "ours-push-metrics-off": {**server, "endpoint": "the push view, Prometheus receivers "
                                  "disconnected (CMP_METRICS=off)"},
        "ours-pull-backlog": {"worker": f"manage.py i3tasks_worker --concurrency {CONCURRENCY}"
                              ", started on a backlog enqueued with .map()",
                              "measured": "from its first recorded finish to its last",
                              "flow_control": pull_flow_control(), **database},
        "old": {"version": old_version(), "workers": f"{CONCURRENCY} x its i3tasks_worker "
                "(one message at a time each)", "task bodies": "the same as ours",
                **database},
        **{row: celery_side.settings_of(row, run.durable_redis.url)
           for row in celery_side.ROWS},
        "procrastinate": peers.Procrastinate.settings,
        "django-tasks-db": {**peers.DjangoTasksDB.settings, **database},
        "ceiling-push": {**server, "endpoint": "acknowledges; one Redis round trip to count"},
        "ceiling-pull": {"subscriber": "google-cloud-pubsub streaming pull that only "
                         "acknowledges", "flow_control": pull_flow_control()},
        "floor": {**server, "endpoint": "claim (1 UPDATE), then finish + result in 1 "
                  "autocommit statement (PostgreSQL; SQLite: 2 in one transaction), raw SQL"},
        "naive-floor": {**server, "endpoint": "the same writes through the ORM: claim, then "
                        "BEGIN, UPDATE, INSERT, COMMIT"},
    }


def measure(db: str, systems: list[str], workloads: list[str], sizes: dict[str, int]
            ) -> dict[str, Any]:
    import celery_side
    import fairness
    import peers

    run = Run(db, sizes)
    out: dict[str, dict[str, Any]] = {s: {} for s in systems}
    rounds = sizes["rounds"]
    in_flight: dict[str, list[dict[str, float]]] = {}

    def note(system: str, workload: str, value: Any) -> None:
        out[system][workload] = value
        print(f"  {system:<15} {workload:<8} {json.dumps(value, default=str)[:150]}",
              flush=True)

    def wanted(system: str, workload: str) -> bool:
        return (system in systems and workload in workloads and workload in PLAN[system]
                and not (db != "postgres" and system in POSTGRES_ONLY))

    def timed(system: str, workload: str, n: int, body: Callable[[], float]) -> float:
        """One throughput run of ``n`` tasks, with the sessions check (PostgreSQL) and, on
        the push server, the requests in flight over the run's window."""
        before = run.sessions.read() if run.sessions else 0
        rate = body()
        if system in PUSH_SERVED:
            counted = fairness.in_flight(run.redis, *WINDOW)  # waits for the stats files
            sent = run.sender_in_flight(system)
            in_flight.setdefault(system, []).append({**counted, "sender": sent})
            print(f"  in flight: {system:<15} in the views: mean {counted['mean']:.2f}, max "
                  f"{counted['max']} over {counted['requests']} requests; at the emulator's "
                  f"sender: mean {sent['mean']:.2f}, max {sent['max']} over "
                  f"{sent['requests']}", flush=True)
        if run.sessions:
            run.sessions.check(system, workload, n, before, "CONN_MAX_AGE=0 on purpose"
                               if system in NEW_SESSION_PER_TASK else None)
        return rate

    def latencies(samples: list[list[float]]) -> dict[str, Any]:
        return {"median": summary([statistics.median(v) for v in samples]),
                "p95": summary([percentile(v, 0.95) for v in samples])}

    try:
        from compare_project import tasks

        # Warm both emulator paths up first, so that whichever system runs first does not
        # pay for it.
        server = run.gunicorn(60)
        ceiling_push(run, WARM_UP)
        run.stop(server)
        ceiling_pull(run, WARM_UP)
        run.redis.delete("cmp:spans")

        # -- enqueue latency and bulk enqueue, every system in turn, round by round --------
        enqueuers: dict[str, dict[str, Callable[[int], Any]]] = {}
        celery_apps: dict[str, Any] = {}
        for row in ("celery-db", "celery-db-safe"):
            if wanted(row, "enqueue") or wanted(row, "bulk"):
                broker = run.durable_redis.url if celery_side.ROWS[row]["safe"] \
                    else run.env.get("CMP_REDIS", "redis://127.0.0.1:6379/7")
                celery_apps[row] = celery_side.app_for(row, broker)
        peer_objects: dict[str, Any] = {}
        if any(wanted("procrastinate", w) for w in WORKLOADS):
            peer_objects["procrastinate"] = peers.Procrastinate(run.spawn, POLL)
        if any(wanted("django-tasks-db", w) for w in WORKLOADS):
            peer_objects["django-tasks-db"] = peers.DjangoTasksDB(run.spawn, POLL)
        if wanted("ours-push", "enqueue") or wanted("ours-push", "bulk"):
            enqueuers["ours-push"] = {"enqueue": ours_latency, "bulk": ours_bulk}
        for row, app in celery_apps.items():
            enqueuers[row] = {"enqueue": lambda n, app=app: celery_side.latency(app, n),
                              "bulk": lambda n, app=app: celery_side.bulk(app, n)}
        for name, peer in peer_objects.items():
            enqueuers[name] = {"enqueue": peer.latency, "bulk": peer.bulk}
        for workload in ("enqueue", "bulk"):
            who = [name for name in enqueuers if wanted(name, workload)]
            if not who:
                continue
            samples: dict[str, list[Any]] = {name: [] for name in who}
            for name in who:  # warm-up
                enqueuers[name][workload](50 if workload == "enqueue" else 100)
            for _ in range(rounds):
                for name in who:
                    samples[name].append(enqueuers[name][workload](sizes[workload]))
            for name in who:
                note(name, workload, latencies(samples[name]) if workload == "enqueue" else
                     {**summary(samples[name]), "tasks": sizes["bulk"]})
        run.redis.delete("latency")
        for peer in peer_objects.values():
            peer.clear()
        if wanted("ours-push", "sql"):
            note("ours-push", "sql", ours_sql())

        # -- push: ours, the 2-statement floor, naive Django and the ceiling in turn -------
        for system, conn in (("ours-push", 60), ("ours-push@0", 0)):
            if not any(wanted(system, w) for w in WORKLOADS):
                continue
            server = run.gunicorn(conn)
            ours_throughput(tasks.noop, 100, hold=run.hold_ours())  # every thread connects
            # Metrics off: the same push view on a second server whose processes disconnect
            # the Prometheus receivers (``CMP_METRICS=off``); ours-push has them on.
            off_port = free_port()
            off_server = run.gunicorn(conn, off_port, {"CMP_METRICS": "off"}) if (
                system == "ours-push" and wanted("ours-push-metrics-off", "noop")) else None
            paired = {name: measure_ref for name, measure_ref in (
                ("ours-push-metrics-off", lambda n, port=off_port: ours_throughput(
                    tasks.noop, n, hold=run.hold_ours_at(port))),
                ("floor", lambda n: floor_throughput(run, n)),
                ("naive-floor", lambda n: floor_throughput(run, n, "naive-floor")),
                ("ceiling-push", lambda n: ceiling_push(run, n)))
                if system == "ours-push" and wanted(name, "noop")}
            for measure_ref in paired.values():
                measure_ref(100)
            run.redis.delete("cmp:spans")
            if wanted(system, "noop"):
                rates: dict[str, list[float]] = {system: [], **{name: [] for name in paired}}
                for _ in range(rounds):
                    rates[system].append(timed(system, "noop", sizes["noop"], lambda: (
                        ours_throughput(tasks.noop, sizes["noop"], hold=run.hold_ours()))))
                    for name, measure_ref in paired.items():
                        rates[name].append(timed(name, "noop", sizes["noop"], lambda m=(
                            measure_ref): m(sizes["noop"])))
                for name, values in rates.items():
                    note(name, "noop", {**summary(values),
                                        "in_flight": in_flight.get(name, [])})
            if off_server is not None:
                run.stop(off_server)
                with run.hold_ours():  # pushes go to the metrics-on server again
                    pass
            if wanted(system, "sleep"):
                note(system, "sleep", summary([timed(system, "sleep", sizes["sleep"], lambda: (
                    ours_throughput(tasks.nap, sizes["sleep"], (SLEEP,), run.hold_ours())))
                    for _ in range(rounds)]))
            if wanted(system, "fanout"):
                pairs = [ours_fanout(tasks.noop, tasks.join, sizes["fanout"])
                         for _ in range(rounds)]
                note(system, "fanout", {"enqueue": summary([p[0] for p in pairs]),
                                        "callback": summary([p[1] for p in pairs])})
            if system == "ours-push":
                for name, path in (("floor", "/floor/"), ("naive-floor", "/naive-floor/")):
                    if wanted(name, "sql"):
                        note(name, "sql", floor_sql(path))
            run.stop(server)

        # -- pull: ours and the ceiling at the worker's own flow control, in turn ----------
        for system, conn in (("ours-pull", 60), ("ours-pull@0", 0)):
            if not any(wanted(system, w) for w in WORKLOADS):
                continue
            def start_worker(conn: int = conn) -> subprocess.Popen:
                return run.spawn([sys.executable, "-m", "django", "i3tasks_worker", "--queue",
                                  "pull", "--concurrency", str(CONCURRENCY),
                                  "--status-interval", "3600"], conn)

            worker = start_worker()
            ours_throughput(tasks.noop_pull, 100)
            if wanted(system, "noop"):
                ceiling = system == "ours-pull" and wanted("ceiling-pull", "noop")
                backlog = system == "ours-pull" and wanted("ours-pull-backlog", "noop")
                rates = {system: [], **({"ceiling-pull": []} if ceiling else {}),
                         **({"ours-pull-backlog": []} if backlog else {})}
                if ceiling:
                    ceiling_pull(run, 100)
                for _ in range(rounds):
                    rates[system].append(timed(system, "noop", sizes["noop"], lambda: (
                        ours_throughput(tasks.noop_pull, sizes["noop"]))))
                    if ceiling:
                        rates["ceiling-pull"].append(ceiling_pull(run, sizes["noop"]))
                    if backlog:
                        run.stop(worker)
                        rates["ours-pull-backlog"].append(timed(
                            "ours-pull-backlog", "noop", sizes["noop"],
                            lambda: ours_backlog(tasks.noop_pull, sizes["noop"], start_worker)))
                        worker = run.children[-1]
                        ours_throughput(tasks.noop_pull, 100)  # its threads connect
                for name, values in rates.items():
                    note(name, "noop", {**summary(values), **(
                        {"flow_control": pull_flow_control()} if name == "ceiling-pull" else {})})
            if wanted(system, "sleep"):
                note(system, "sleep", summary([timed(system, "sleep", sizes["sleep"], lambda: (
                    ours_throughput(tasks.nap_pull, sizes["sleep"], (SLEEP,))))
                    for _ in range(rounds)]))
            if wanted(system, "fanout"):
                pairs = [ours_fanout(tasks.noop_pull, tasks.join_pull, sizes["fanout"])
                         for _ in range(rounds)]
                note(system, "fanout", {"enqueue": summary([p[0] for p in pairs]),
                                        "callback": summary([p[1] for p in pairs])})
            run.stop(worker)
        ours_clear()

        # -- Celery: each row with both pools, the better one kept per workload ------------
        for row in celery_side.ROWS:
            if not any(wanted(row, w) for w in ("noop", "sleep", "fanout", "sql")):
                continue
            broker = run.durable_redis.url if celery_side.ROWS[row]["safe"] \
                else run.env.get("CMP_REDIS", "redis://127.0.0.1:6379/7")
            app = celery_side.app_for(row, broker)
            by_pool: dict[str, dict[str, Any]] = {"noop": {}, "sleep": {}, "fanout": {}}
            for group in (("noop", "fanout"), ("sleep",)):
                group = tuple(w for w in group if wanted(row, w))
                if not group:
                    continue
                prefetch = celery_side.PREFETCH[group[0]]
                for pool in celery_side.POOLS:
                    worker = celery_side.worker(run.spawn, row, pool, prefetch, broker)
                    celery_side.throughput(app, row, "noop", 100, POLL)  # waits for it
                    for workload in group:
                        if workload == "fanout":
                            pairs = [celery_side.fanout(app, row, sizes["fanout"], POLL)
                                     for _ in range(rounds)]
                            by_pool["fanout"][pool] = {
                                "enqueue": summary([p[0] for p in pairs]),
                                "callback": summary([p[1] for p in pairs])}
                            continue
                        name, args = ("noop", ()) if workload == "noop" else ("nap", (SLEEP,))
                        n = sizes[workload]
                        one = functools.partial(celery_side.throughput, app, row, name, n,
                                                POLL, args)
                        by_pool[workload][pool] = {**summary([timed(
                            f"{row}/{pool}", workload, n, one) for _ in range(rounds)]),
                            "prefetch_multiplier": prefetch}
                    run.stop(worker)
            for workload, figures in by_pool.items():
                if not figures:
                    continue
                if workload == "fanout":
                    best = min(figures, key=lambda p: figures[p]["callback"]["median"])
                else:
                    best = max(figures, key=lambda p: figures[p]["median"])
                note(row, workload, {**figures[best], "pool": best, "by_pool": figures})
            if wanted(row, "sql"):
                note(row, "sql", celery_side.sql(app))

        # -- the durable peers ------------------------------------------------------------
        for name, peer in peer_objects.items():
            if not any(wanted(name, w) for w in ("noop", "sleep", "fanout")):
                continue
            started = peer.worker()
            peer.throughput(100)  # warm-up: every worker thread, its connection
            if wanted(name, "noop"):
                one = functools.partial(peer.throughput, sizes["noop"])
                note(name, "noop", summary([timed(name, "noop", sizes["noop"], one)
                                            for _ in range(rounds)]))
            if wanted(name, "sleep"):
                one = functools.partial(peer.throughput, sizes["sleep"], SLEEP)
                note(name, "sleep", summary([timed(name, "sleep", sizes["sleep"], one)
                                             for _ in range(rounds)]))
            if wanted(name, "fanout"):
                pairs = [peer.fanout(sizes["fanout"]) for _ in range(rounds)]
                note(name, "fanout", {"enqueue": summary([p[0] for p in pairs]),
                                      "callback": summary([p[1] for p in pairs]),
                                      "join": "none (time to the last member)"})
            for child in (started if isinstance(started, list) else [started]):
                run.stop(child)
            peer.clear()
        for peer in peer_objects.values():
            peer.close()

        def unmeasured(system: str) -> bool:  # not already measured beside ours
            return wanted(system, "noop") and "noop" not in out[system]

        if any(unmeasured(s) for s in ("ceiling-push", "floor", "naive-floor")):
            server = run.gunicorn(60)
            for name, measure_ref in (
                    ("floor", lambda n: floor_throughput(run, n)),
                    ("naive-floor", lambda n: floor_throughput(run, n, "naive-floor")),
                    ("ceiling-push", lambda n: ceiling_push(run, n))):
                if unmeasured(name):
                    measure_ref(100)
                    run.redis.delete("cmp:spans")
                    values = [timed(name, "noop", sizes["noop"], lambda m=measure_ref: (
                        m(sizes["noop"]))) for _ in range(rounds)]
                    note(name, "noop", {**summary(values), "in_flight": in_flight[name]})
            run.stop(server)
        if unmeasured("ceiling-pull"):
            ceiling_pull(run, 100)
            note("ceiling-pull", "noop", {**summary([ceiling_pull(run, sizes["noop"])
                                                     for _ in range(rounds)]),
                                          "flow_control": pull_flow_control()})

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
                    if run.sessions and result.get("new_sessions") is not None:
                        opened = result["new_sessions"]
                        entry = {"system": "old", "workload": workload, "tasks": n,
                                 "new_sessions": opened, "per_task": opened / n,
                                 "ok": opened / n <= fairness.MAX_SESSIONS_PER_TASK}
                        run.sessions.checks.append(entry)
                        print(f"  sessions: old {workload}: {opened} new PostgreSQL sessions "
                              f"for {n} tasks ({opened / n:.3f}/task)", flush=True)
                if not rates:
                    continue
                note("old", workload, {**summary(rates), "tasks": n,
                                       "workers": CONCURRENCY})
                if wanted("old", "enqueue") and "enqueue" not in out["old"]:
                    note("old", "enqueue", {"mean": summary(enqueue)})
        # Last: 70,000 rows written and deleted leave the database busy (autovacuum) for a
        # while, which would weigh on whatever ran next.
        if wanted("ours-push", "beat"):
            note("ours-push", "beat", beat_figures(db))
        from django.conf import settings as django_settings

        clients = {"system, broker and results": run.redis,
                   "durable broker of celery-db-safe": __import__("redis").Redis.from_url(
                       run.durable_redis.url)}
        versions = fairness.versions(
            clients, "host=127.0.0.1 user=postgres dbname=postgres" if db == "postgres"
            else None, old_version())
        configuration = system_settings(run, django_settings)
    finally:
        run.close()
    return {"db": db, "load_average": os.getloadavg(), "sizes": sizes, "systems": out,
            "versions": versions, "settings": {s: configuration.get(s) for s in systems},
            "sessions": run.sessions.checks if run.sessions else None,
            "emulator": fairness.environment_note()}


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
    from compare_report import chart, machine, table

    if args.partial:
        result = measure(args.partial.split(":")[0], systems, workloads, sizes)
        Path(args.partial.split(":", 1)[1]).write_text(json.dumps(result))
        return
    results = []
    for db in (["postgres", "sqlite"] if args.db == "both" else [args.db]):
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
    bad = [c for result in results for c in (result.get("sessions") or []) if not c["ok"]]
    if bad:
        sys.exit(f"sessions check failed: {bad}")


if __name__ == "__main__":
    main()
