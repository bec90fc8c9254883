"""The workloads as procrastinate tasks (PostgreSQL only), same bodies as ``tasks.py``.

Its worker: ``procrastinate --app=compare_project.procrastinate_app.app worker
--concurrency 8`` (LISTEN/NOTIFY on, its default: a deferred job wakes a worker at once).
The connector keeps a pool of connections; ``latency_noop`` goes to a queue no worker
reads."""

import os
import time

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(
    conninfo=f"host={os.environ.get('I3TASKS_PG_HOST', '127.0.0.1')} "
             f"port={os.environ.get('I3TASKS_PG_PORT', '5432')} user=postgres "
             f"dbname={os.environ.get('CMP_DB_NAME', 'i3tasks_compare')}"))


@app.task(name="noop")
def noop(index: int) -> int:
    return index


@app.task(name="latency_noop", queue="idle")
def latency_noop(index: int) -> int:
    return index


@app.task(name="nap")
def nap(index: int, seconds: float) -> int:
    time.sleep(seconds)
    return index
