"""Tasks used by the test suite. Effects go to ``CALLS`` (in-process) so tests can count runs."""

import threading
import time
from collections import Counter

from django_i3tasks import TaskDecorator

CALLS: Counter = Counter()
_lock = threading.Lock()


def record(name: str) -> int:
    with _lock:
        CALLS[name] += 1
        return CALLS[name]


@TaskDecorator
def add(a, b):
    record(f"add:{a}:{b}")
    return a + b


@TaskDecorator(max_retries=2)
def always_fails(tag):
    record(f"always_fails:{tag}")
    raise ValueError(f"boom {tag}")


@TaskDecorator(max_retries=3)
def fails_once(tag):
    if record(f"fails_once:{tag}") == 1:
        raise RuntimeError("first try fails")
    return tag


@TaskDecorator(bind=True)
def whoami(tag, task_metadata=None):
    record(f"whoami:{tag}")
    return {
        "task": task_metadata.task_name,
        "try": task_metadata.try_number,
        "execution": str(task_metadata.execution_uuid),
        "queue": task_metadata.queue_name,
    }


@TaskDecorator
def returns_object(tag):
    record(f"returns_object:{tag}")
    return {1, 2}


@TaskDecorator
def slow(tag, seconds=0.5):
    record(f"slow:{tag}")
    time.sleep(seconds)
    return tag


@TaskDecorator
def step(tag):
    record(f"step:{tag}")
    return tag


# Task modules of the other test areas register their tasks when this module is discovered.
from tests.testapp import (  # noqa: E402,F401
    beat_tasks,
    chain_tasks,
    control_tasks,
    limit_tasks,
    security_tasks,
    worker_tasks,
    workflow_tasks,
)
