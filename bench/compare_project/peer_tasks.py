"""The workloads as django-tasks tasks (database backend, run by its ``db_worker``): same
bodies as ``tasks.py``. ``latency_noop`` goes to a queue no worker reads."""

import time

from django_tasks import task


@task()
def noop(index: int) -> int:
    return index


@task(queue_name="idle")
def latency_noop(index: int) -> int:
    return index


@task()
def nap(index: int, seconds: float) -> int:
    time.sleep(seconds)
    return index
