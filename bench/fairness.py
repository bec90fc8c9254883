"""What makes ``bench/compare.py`` a fair comparison, and what proves it in the results:
every package's version and every system's settings, PostgreSQL sessions opened per task
(``pg_stat_database.sessions`` before and after), requests in flight at once on the push
endpoints, and the second Redis that keeps its data on disk ("Celery with our guarantees")."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["django-i3tasks", "django", "google-cloud-pubsub", "grpcio", "psycopg", "gunicorn",
            "celery", "kombu", "django-celery-results", "redis", "procrastinate",
            "psycopg-pool", "django-tasks", "django-tasks-db"]
#: A run fails when a system opens more new PostgreSQL sessions than this per task.
MAX_SESSIONS_PER_TASK = 0.05
PG_SETTINGS = ["shared_buffers", "synchronous_commit", "fsync", "max_connections",
               "wal_level", "work_mem", "jit"]


def versions(redis_clients: dict[str, Any], pg_dsn: str | None,
             old_version: str | None) -> dict[str, Any]:
    """Package versions of this interpreter, the Redis servers' versions and persistence,
    PostgreSQL's version and the settings that weigh on commits."""
    found: dict[str, Any] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        found["django-i3tasks commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
            text=True, check=False).stdout.strip() or None
    except OSError:
        found["django-i3tasks commit"] = None
    found["django-i3tasks 0.1.9 side"] = old_version
    for label, client in redis_clients.items():
        info = client.info()
        found[f"redis server ({label})"] = {
            "version": info.get("redis_version"),
            "appendonly": client.config_get("appendonly").get("appendonly"),
            "appendfsync": client.config_get("appendfsync").get("appendfsync"),
            "save": client.config_get("save").get("save"),
        }
    if pg_dsn:
        import psycopg

        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            found["postgresql"] = {
                "version": conn.execute("SHOW server_version").fetchone()[0],
                **{name: conn.execute(f"SHOW {name}").fetchone()[0] for name in PG_SETTINGS},
            }
    return found


class Sessions:
    """``pg_stat_database.sessions`` of one database, read from a connection to another
    database (``postgres``) so that reading it opens no session on the one measured."""

    def __init__(self, dsn: str, database: str) -> None:
        self.dsn, self.database = dsn, database
        self.checks: list[dict[str, Any]] = []

    def read(self) -> int:
        import psycopg

        # Backends publish their counters at most once a second; wait for the last ones.
        time.sleep(1.1)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                               [self.database]).fetchone()
        return int(row[0]) if row else 0

    def check(self, system: str, workload: str, tasks: int, before: int,
              expected: str | None = None) -> dict[str, Any]:
        """Record and print the sessions opened since ``before``; ``expected`` says why a
        row opens one per task on purpose (it is then not held against the run)."""
        opened = self.read() - before
        entry = {"system": system, "workload": workload, "tasks": tasks,
                 "new_sessions": opened, "per_task": opened / tasks,
                 "ok": expected is not None or opened / tasks <= MAX_SESSIONS_PER_TASK}
        if expected:
            entry["expected"] = expected
        self.checks.append(entry)
        verdict = f"  ({expected})" if expected else "" if entry["ok"] else \
            "  <-- MORE THAN ABOUT 0"
        print(f"  sessions: {system:<22} {workload:<7} {opened:>4} new PostgreSQL sessions "
              f"for {tasks} tasks ({opened / tasks:.3f}/task){verdict}", flush=True)
        return entry


def in_flight(client: Any, started: float, ended: float) -> dict[str, float]:
    """Requests in flight on the push endpoints between ``started`` and ``ended``, from the
    spans the WSGI wrapper wrote (``compare_project/wsgi.py``): the time-weighted mean and
    the maximum. The spans are taken out of Redis."""
    time.sleep(0.5)  # the wrapper flushes every 0.2 s
    raw = client.lrange("cmp:spans", 0, -1)
    client.delete("cmp:spans")
    spans = [tuple(map(float, item.split())) for item in raw]
    spans = [(max(a, started), min(b, ended)) for a, b in spans if b > started and a < ended]
    if not spans or ended <= started:
        return {"mean": 0.0, "max": 0, "requests": 0}
    busy = sum(b - a for a, b in spans)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return {"mean": busy / (ended - started), "max": peak, "requests": len(spans)}


class DurableRedis:
    """A second redis-server on its own port with ``appendonly yes`` and ``appendfsync
    everysec`` (the broker of "Celery with our guarantees"); the system's Redis is left as
    it is."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="cmp-redis-aof-")
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not on PATH (needed for the durable broker)")
        self.process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--protected-mode", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def environment_note() -> dict[str, Any]:
    return {"I3TASKS_EMULATOR": os.environ.get("I3TASKS_EMULATOR"),
            "I3TASKS_EMULATOR_PUSH_CONCURRENCY":
                os.environ.get("I3TASKS_EMULATOR_PUSH_CONCURRENCY")}
