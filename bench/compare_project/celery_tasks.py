"""The workloads as Celery tasks: same bodies as ``tasks.py``."""

import time

from celery import shared_task


@shared_task
def noop(index: int) -> int:
    return index


@shared_task
def latency_noop(index: int) -> int:
    return index


@shared_task
def nap(index: int, seconds: float) -> int:
    time.sleep(seconds)
    return index


@shared_task
def join(results: list) -> int:
    return len(results)
