"""The workloads as django-i3tasks tasks (autodiscovered). Push variants go to the default
(push) queue, pull variants to the ``pull`` queue."""

import time

from django_i3tasks import TaskDecorator


@TaskDecorator
def noop(index: int) -> int:
    return index


@TaskDecorator(queue_name="pull")
def noop_pull(index: int) -> int:
    return index


@TaskDecorator(queue_name="latency")
def latency_noop(index: int) -> int:
    return index


@TaskDecorator
def nap(index: int, seconds: float) -> int:
    time.sleep(seconds)
    return index


@TaskDecorator(queue_name="pull")
def nap_pull(index: int, seconds: float) -> int:
    time.sleep(seconds)
    return index


@TaskDecorator
def join(*args: object) -> str:
    return "joined"


@TaskDecorator(queue_name="pull")
def join_pull(*args: object) -> str:
    return "joined"
