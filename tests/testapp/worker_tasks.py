"""Tasks for the worker tests (registered when tests.testapp.tasks is autodiscovered).

They run in worker subprocesses, so their effects are rows (``Effect``), not ``CALLS``.
"""

import os
import time

from django_i3tasks import TaskDecorator


@TaskDecorator(queue_name="heavy")
def nap(key: str, seconds: float = 0.0) -> str:
    """Sleep, then record one effect: a task killed while it sleeps leaves none."""
    from tests.testapp.models import Effect

    time.sleep(seconds)
    Effect.objects.create(key=key, pid=os.getpid())
    return key


@TaskDecorator(queue_name="heavy", max_retries=1)
def nap_fails(key: str) -> None:
    from tests.testapp.models import Effect

    Effect.objects.create(key=key, pid=os.getpid())
    raise RuntimeError(f"{key} fails")
