"""The benchmark's task for 0.1.9: the body of ``tests.testapp.worker_tasks.nap``.

0.1.9's decorator picks the queue with ``topic_name=`` (it has no ``queue_name=``).
"""

import os
import time

from django_i3tasks.utils import TaskDecorator


@TaskDecorator(topic_name="heavy", subscription_name="pull")
def nap(key: str, seconds: float = 0.0) -> str:
    """Sleep, then record one effect."""
    from oldbench.models import Effect

    time.sleep(seconds)
    Effect.objects.create(key=key, pid=os.getpid())
    return key


# The bodies of bench/compare.py's tasks (compare_project/tasks.py): no effect row.
@TaskDecorator(topic_name="heavy", subscription_name="pull")
def noop(index: int) -> int:
    return index


@TaskDecorator(topic_name="heavy", subscription_name="pull")
def nap_only(index: int, seconds: float) -> int:
    time.sleep(seconds)
    return index
